"""The set-up both stage runners share: device, output folder, threads and run-config checks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from tagclip_cls.runtime.atomic_io import write_json_atomic
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.arguments import check_device, check_out_folder
from tagclip_cls.runtime.overlap import cores_per_rank


def check_device_and_output(device: str, out: str | os.PathLike) -> None:
    """One-line errors, before anything loads, for a device torch can't use and an ``--out`` that
    is an existing file (the precision is checked where it is resolved: core.choices)."""
    check_device(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no GPU here; use --device cpu")
    check_out_folder(out)


def share_cpu_threads(threads: int | None = None) -> None:
    """``threads`` torch threads, or this process's share of the CPUs among the ranks of this node."""
    torch.set_num_threads(max(1, threads) if threads is not None else cores_per_rank())


def _changed(previous: object, config: dict) -> str:
    """What differs between a folder's record and this run, in words: the first changed setting."""
    if not isinstance(previous, dict):
        return "settings this run can't read (the record is damaged)"
    for key in sorted(set(previous) | set(config)):
        if previous.get(key) != config.get(key):
            return "other weights (their content changed)" if key == "weights" else f"another {key!r} setting"
    return "other settings"


def check_run_config(path: Path, config: dict, write: bool, overwrite: bool = False,
                     known_before_loading: bool = False, root: Path | None = None) -> None:
    """Refuse to mix outputs of different settings in one folder (unless ``overwrite``); a
    missing record is written (``write``: by one rank only).

    ``known_before_loading``: ``config`` holds only the settings known before the model loads;
    those are compared (so that a mismatch is refused at once) and nothing is written. ``root``:
    the output folder the record must lie in (default: its own folder)."""
    config = json.loads(json.dumps(config))  # tuples become lists, as read back
    if path.is_file() and not overwrite:
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            previous = None  # an empty or damaged record: nothing says the outputs match
        if known_before_loading and isinstance(previous, dict):
            previous = {key: previous.get(key) for key in config}
        if previous != config:
            raise UserError(f"{path}: this --out folder holds outputs made with {_changed(previous, config)}; "
                            f"use another --out or add --overwrite")
        return
    if write and not known_before_loading:
        write_json_atomic(path, config, root)
