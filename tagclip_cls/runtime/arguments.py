"""Checks of command-line values that need neither torch nor a model, so that a tool answers a
mistake in well under a second: paths that must exist, the device, the precision, ``--out``
(never empty, never over an input)."""
from __future__ import annotations

import argparse
import glob
import os
import re
from pathlib import Path

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.precision import check_precision

DEVICE_PATTERN = re.compile(r"(cpu|cuda)(:\d+)?")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
FOLDER_ARGUMENTS = ("img_root", "gt", "pred", "gt_masks", "pseudo_masks", "data_root")
FILE_ARGUMENTS = ("split", "classes", "background", "config", "seg_config", "checkpoint")
POSITIONAL_ARGUMENTS = ("config", "checkpoint", "runs")
#: everything a tool reads (files or folders), which no output may replace
INPUT_ARGUMENTS = (*FOLDER_ARGUMENTS, *FILE_ARGUMENTS, "tags", "masks", "seg", "tables", "instances", "voc_root",
                   "ids", "pretrained", "runs")
#: where tools write: ``out`` (a folder, or one file where the tool says so) and stage 3's ``work_dir``
OUTPUT_ARGUMENTS = ("out", "work_dir")


def looks_like_path(pretrained: str) -> bool:
    """Whether ``--pretrained`` names a file rather than an open_clip tag."""
    return os.sep in pretrained or pretrained.endswith(WEIGHT_SUFFIXES) or Path(pretrained).exists()


def no_gpu_visible() -> bool:
    """True where no GPU can be there: no NVIDIA or AMD device node, or CUDA_VISIBLE_DEVICES
    hides them all. Only a certain absence counts; torch decides the rest later."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    return not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"))


def check_device(device: str, precision: str = "fp32") -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` with a GPU that can exist, and a precision it can run."""
    match = DEVICE_PATTERN.fullmatch(device)
    if match is None:
        raise UserError(f"--device {device!r}: use cpu or cuda (cuda:N)")
    if match.group(1) == "cuda" and no_gpu_visible():
        raise UserError(f"--device {device} asked for, but there is no visible GPU here; use --device cpu")
    check_precision(precision, match.group(1))


def check_out_folder(out: str | os.PathLike) -> None:
    if str(out) == "":
        raise UserError("--out '': name an output folder")
    if Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"{out}: --out names an existing file; it must be a folder")


def _inputs(values: dict) -> list[tuple[str, Path]]:
    """``(flag, resolved path)`` of every input named that exists on disk."""
    found = []
    for name in INPUT_ARGUMENTS:
        value = values.get(name)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)) and str(item) and Path(item).exists():
                found.append((_flag(name), Path(item).resolve()))
    return found


def check_outputs_spare_inputs(values: dict, out_is_folder: bool = True) -> None:
    """Refuse an output that would replace an input, comparing resolved paths (symlinks and
    ``..`` included): an output file that is an input, or an existing file inside an input
    folder; an output folder that is an input folder, or that holds an input file (the tool
    writes into it). An empty output path is refused too (it would mean the working directory)."""
    inputs = _inputs(values)
    for name in OUTPUT_ARGUMENTS:
        value = values.get(name)
        if value is None:
            continue
        flag, folder = _flag(name), out_is_folder or name != "out"
        if str(value) == "":
            raise UserError(f"{flag} '': name an output {'folder' if folder else 'file'}")
        target = Path(value).resolve()
        for source_flag, source in inputs:
            if target == source:
                raise UserError(f"{value}: {flag} is the {source_flag} input; write elsewhere")
            if not folder and source.is_dir() and source in target.parents and target.exists():
                raise UserError(f"{value}: {flag} would replace a file inside the {source_flag} folder {source}")
            if folder and source.is_file() and target in source.parents:
                raise UserError(f"{value}: {flag} holds the {source_flag} input {source}, which the tool could "
                                f"overwrite; write elsewhere")


def _flag(name: str) -> str:
    return name if name in POSITIONAL_ARGUMENTS else "--" + name.replace("_", "-")


def check_arguments(args: argparse.Namespace, out_is_folder: bool = True) -> argparse.Namespace:
    """Check the values every tool names alike (see the module docstring); returns ``args``."""
    values = vars(args)
    if values.get("device"):
        check_device(values["device"], values.get("precision") or "fp32")
    check_outputs_spare_inputs(values, out_is_folder)
    if out_is_folder and values.get("out"):
        check_out_folder(values["out"])
    for name in FOLDER_ARGUMENTS:
        if values.get(name) and not Path(values[name]).is_dir():
            raise UserError(f"{values[name]}: {_flag(name)} folder not found")
    for name in FILE_ARGUMENTS:
        if values.get(name) and not Path(values[name]).is_file():
            raise UserError(f"{values[name]}: {_flag(name)} file not found")
    pretrained = values.get("pretrained")
    if pretrained and looks_like_path(pretrained) and not Path(pretrained).is_file():
        raise UserError(f"{pretrained}: checkpoint not found (pass an existing file, or an open_clip "
                        f"tag such as 'openai')")
    return args
