"""Stage 2's output folder: ``cams/ID.npz``, ``masks/ID.png``, ``masks_crf/ID.png``, ``config.json``
(and the pipeline's training labels ``masks_crf_confTHRESHOLD/ID.png``).

* ``cams/ID.npz``: ``keys`` (int64 class indices, the image's tags) and ``cams`` (float16
  ``K x H x W`` in [0, 1] at the image's original size); no pickles;
* ``masks/ID.png`` and ``masks_crf/ID.png``: label PNGs (:mod:`.mask_png`), before and after the CRF;
* ``masks_crf_confT/ID.png`` (e.g. ``masks_crf_conf0.95``): the CRF labels with every pixel whose
  CRF confidence is below ``T`` set to 255, what a segmenter trains on (CLIP-ES's
  "confidence-guided" labels), while ``masks_crf/`` keeps every pixel for evaluation;
* ``config.json``: the settings the files were made with.

Every path is built with :func:`~tagclip_cls.runtime.ids.path_inside`, so no id can reach
outside the folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tagclip_cls.runtime.atomic_io import atomic_write
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.ids import path_inside

CAMS, MASKS, MASKS_CRF = "cams", "masks", "masks_crf"


@dataclass(frozen=True)
class MaskFolder:
    """Where stage 2's files for each image lie."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def cam(self, image_id: str) -> Path:
        return path_inside(self.root, CAMS, f"{image_id}.npz")

    def mask(self, image_id: str) -> Path:
        return path_inside(self.root, MASKS, f"{image_id}.png")

    def crf(self, image_id: str) -> Path:
        return path_inside(self.root, MASKS_CRF, f"{image_id}.png")

    def confident(self, image_id: str, threshold: float) -> Path:
        return path_inside(self.root, self.confident_dir(threshold).name, f"{image_id}.png")

    def confident_dir(self, threshold: float) -> Path:
        """The folder of CRF labels with pixels less confident than ``threshold`` ignored (255)."""
        return self.root / f"{MASKS_CRF}_conf{threshold:g}"

    def label_dir(self, crf: bool) -> Path:
        """The folder of label PNGs before (``masks``) or after (``masks_crf``) the CRF."""
        return self.root / (MASKS_CRF if crf else MASKS)

    @property
    def config(self) -> Path:
        return self.root / "config.json"


def write_cams(path: str | os.PathLike, keys: Sequence[int], cams: np.ndarray,
               root: str | os.PathLike | None = None) -> None:
    """``np.savez`` of ``keys`` (int64) and ``cams`` (float16) to a temp file, renamed into place."""
    keys_arr = np.asarray(list(keys), dtype=np.int64)
    cams_arr = np.ascontiguousarray(cams, dtype=np.float16)
    atomic_write(path, lambda f: np.savez(f, keys=keys_arr, cams=cams_arr), "wb", root)


def read_cams(path: str | os.PathLike, num_classes: int | None = None) -> tuple[list[int], np.ndarray]:
    """``(keys, cams)`` of a CAM file; a missing, truncated or malformed file is a :class:`UserError`,
    and so, when ``num_classes`` is given, is a key outside ``0..num_classes - 1``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, cams = _class_keys(data["keys"], path), np.asarray(data["cams"])
    except FileNotFoundError:
        raise UserError(f"{path}: CAM file not found") from None
    except UserError:
        raise
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a CAM file with 'keys' and 'cams' arrays ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile and other damage of the container
        raise UserError(f"{path}: damaged CAM file ({type(exc).__name__})") from None
    if cams.ndim != 3 or cams.shape[0] != len(keys):
        raise UserError(f"{path}: CAM file holds {cams.shape} maps for {len(keys)} keys")
    if num_classes is not None:
        bad = [k for k in keys if not 0 <= k < num_classes]
        if bad:
            raise UserError(f"{path}: CAM key {bad[0]} is not a class index (0..{num_classes - 1})")
    return keys, cams


def read_cam_keys(path: str | os.PathLike) -> list[int] | None:
    """The ``keys`` of a CAM file, or ``None`` when it is missing or unreadable (to be recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return _class_keys(data["keys"], path)
    except Exception:  # missing, truncated, empty, not a zip, no keys, bad keys: all mean "compute it"
        return None


def _class_keys(keys: np.ndarray, path: str | os.PathLike) -> list[int]:
    """A CAM file's ``keys``: distinct non-negative class indices of an integer type (a float
    key would be truncated, a negative one would index classes from the end)."""
    if keys.ndim != 1 or keys.dtype.kind not in "iu" or (keys < 0).any() or len(np.unique(keys)) != len(keys):
        raise UserError(f"{path}: CAM keys must be distinct class indices (non-negative integers), got "
                        f"{keys.dtype} {np.array2string(keys.ravel()[:5], separator=', ')} of shape {keys.shape}")
    return keys.tolist()
