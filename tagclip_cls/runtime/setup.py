"""The set-up both stage runners share: device, output folder, threads and run-config checks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from tagclip_cls.runtime.atomic_io import write_json_atomic
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.precision import check_precision


def check_device_and_output(device: str, precision: str, out: str | os.PathLike) -> None:
    """One-line errors, before anything loads, for a device torch can't use, a precision that
    would crawl, and an ``--out`` that is an existing file."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise UserError(f"--device {device!r}: not a torch device; use cpu or cuda (cuda:N)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no GPU here; use --device cpu")
    if kind not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: use cpu or cuda (cuda:N)")
    check_precision(precision, torch.device(kind))
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"{out}: --out names an existing file; it must be a folder")


def share_cpu_threads(threads: int | None = None) -> None:
    """``threads`` torch threads, or this process's share of the CPUs among the ranks of this node."""
    if threads is not None:
        torch.set_num_threads(max(1, threads))
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def check_run_config(path: Path, config: dict, write: bool, overwrite: bool = False) -> None:
    """Refuse to mix outputs of different settings in one folder (unless ``overwrite``); a
    missing record is written (``write``: by one rank only)."""
    config = json.loads(json.dumps(config))  # tuples become lists, as read back
    if path.is_file() and not overwrite:
        try:
            previous = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            previous = None  # an empty or damaged record: nothing says the outputs match
        if previous != config:
            raise UserError(f"{path.parent}: holds outputs made with other settings ({path} differs or is "
                            f"unreadable); use another --out or add --overwrite")
        return
    if write:
        write_json_atomic(path, config)
