"""A checkpoint file read as data: torch's weights-only unpickler, after the zip's member sizes
are checked (:func:`~tagclip_cls.core.torchscript.check_zip_members`), so that nothing in the file
runs and a small file cannot inflate to gigabytes. Stage 1 and 2 read CLIP weights through here,
stage 3 its segmentation checkpoints; a truncated or foreign file is one :class:`UserError`."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from tagclip_cls.core.torchscript import check_zip_members
from tagclip_cls.runtime.errors import UserError

UNPICKLER_REASON = "WeightsUnpickler error:"  # what torch's weights-only loader puts before its reason


def load_weights_only(path: str | os.PathLike) -> Any:
    """The object pickled in ``path`` (``torch.load(weights_only=True)``, on the CPU)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                check_zip_members(path, archive)
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as exc:  # torch reports a damaged file with anything from EOFError to RuntimeError
        raise UserError(f"{path}: not a readable checkpoint ({load_problem(exc)})") from None


def load_problem(exc: Exception) -> str:
    """One line of why ``torch.load`` failed: the weights-only unpickler's own reason rather than
    the advice, first in its message, to load the file with ``weights_only=False``."""
    text = str(exc).strip()
    if UNPICKLER_REASON in text:
        reason = next((line.strip() for line in text.split(UNPICKLER_REASON, 1)[1].splitlines() if line.strip()), "")
        return f"the weights-only unpickler refused it: {reason or type(exc).__name__}"
    return text.splitlines()[0] if text else type(exc).__name__


def state_dict_of(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: its ``state_dict`` entry or the object itself, without
    the ``module.`` prefix that a wrapped (DDP) model's keys carry."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: does not hold a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj
