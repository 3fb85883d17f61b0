"""Stage 2 step 4: label maps from refined CAMs.

A CAM stack is ``K x H x W`` in [0, 1], one map per tag; ``keys`` are the tags' class indices.
Two label spaces exist (the preset's ``clip_es.label_space``):

* ``background+classes`` (VOC, COCO-Object): background score ``1 - max_c cam``
  is stacked in front of the CAMs; the arg-max row 0 is background (label 0), row ``i`` is
  class ``keys[i-1]`` (label ``keys[i-1] + 1``).
* ``coarse27`` (COCO-Stuff): no background row; the arg-max over the tag CAMs gives a 171-class
  index, mapped to the 27 coarse classes with the preset's ``class_to_coarse27`` (labels 0..26).

The CRF works on the same rows (``probability_stack``), so both routes share ``rows_to_labels``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tagclip_cls.core.presets import Preset

from tagclip_cls.formats.mask_png import IGNORE
from tagclip_cls.runtime.errors import UserError

MAX_CLASSES = IGNORE - 1  # labels 1..254 with 0 = background and 255 = ignore, in uint8


@dataclass(frozen=True)
class LabelSpace:
    """How CAM rows become label-map values for one dataset."""

    has_background: bool
    class_to_label: tuple[int, ...]  # class index -> label-map value
    num_labels: int  # label values are 0 .. num_labels - 1 (plus 255 = ignore)

    @classmethod
    def from_preset(cls, preset: Preset) -> "LabelSpace":
        """The label space named by ``preset.clip_es.label_space``."""
        space = preset.clip_es.label_space
        if space == "background+classes":
            if preset.num_classes > MAX_CLASSES:
                raise UserError(f"{preset.name}: {preset.num_classes} classes, but label PNGs are 8-bit: at most "
                                f"{MAX_CLASSES} classes besides background (255 means ignore)")
            return cls(True, tuple(range(1, preset.num_classes + 1)), preset.num_classes + 1)
        if space == "coarse27":
            mapping = tuple(int(v) for v in preset.clip_es.class_to_coarse27)
            if len(mapping) != preset.num_classes:
                raise ValueError(f"preset {preset.name}: class_to_coarse27 has {len(mapping)} entries, "
                                 f"expected {preset.num_classes}")
            return cls(False, mapping, len(preset.clip_es.coarse27_names) or max(mapping) + 1)
        raise ValueError(f"preset {preset.name}: unknown label_space {space!r}")


def check_cams(cams: np.ndarray, keys: Sequence[int]) -> np.ndarray:
    """``cams`` as an array, after checking it is ``K x H x W`` with one map per key."""
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must be K x H x W, got shape {cams.shape}")
    if cams.shape[0] != len(keys):
        raise ValueError(f"{cams.shape[0]} CAMs for {len(keys)} keys")
    return cams


def probability_stack(cams: np.ndarray, space: LabelSpace) -> np.ndarray:
    """The rows the arg-max and the CRF see: ``[bg, cams]`` or just ``cams`` (float32, not renormalised)."""
    cams = np.asarray(cams, dtype=np.float32)
    if cams.ndim != 3:
        raise ValueError(f"cams must be K x H x W, got shape {cams.shape}")
    if not space.has_background:
        return cams
    if cams.shape[0]:
        background = 1.0 - cams.max(axis=0)
    else:
        background = np.ones(cams.shape[1:], dtype=np.float32)
    return np.concatenate([background[None], cams], axis=0)


def rows_to_labels(rows: np.ndarray, keys: Sequence[int], space: LabelSpace) -> np.ndarray:
    """Map row indices into the probability stack to label values (uint8); 255 stays 255."""
    rows = np.asarray(rows)
    row_labels = [space.class_to_label[k] for k in keys]
    if space.has_background:
        row_labels = [0, *row_labels]
    if len(row_labels) >= IGNORE:
        raise ValueError(f"{len(row_labels)} rows do not fit a uint8 map with 255 reserved")
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[:len(row_labels)] = row_labels
    return lut[rows.astype(np.uint8)]


def first_argmax(rows: np.ndarray) -> np.ndarray:
    """``rows.argmax(axis=0)`` as uint8 for an ``R x H x W`` stack of at most 255 rows: the first
    maximum wins, and the first NaN as in numpy. A running comparison over the rows, because
    numpy's arg-max along the first axis goes pixel by pixel (6.6 ms for 3 x 375 x 500 on the
    2-core Xeon, against 1.5 ms here) and it ran for every label PNG and CRF mask."""
    rows = np.asarray(rows)
    if rows.shape[0] > IGNORE:
        raise ValueError(f"{rows.shape[0]} rows do not fit a uint8 index")
    if np.isnan(rows).any():  # rare (only a damaged CAM file has them): numpy's own rule
        return rows.argmax(axis=0).astype(np.uint8)
    index = np.zeros(rows.shape[1:], dtype=np.uint8)
    best = rows[0].copy()
    for r in range(1, rows.shape[0]):
        better = np.greater(rows[r], best)
        index += better.view(np.uint8) * (np.uint8(r) - index)  # r where better (uint8 wraps back)
        np.maximum(best, rows[r], out=best)
    return index


def label_map(cams: np.ndarray, keys: Sequence[int], space: LabelSpace) -> np.ndarray:
    """Per-pixel arg-max label map (uint8, ``H x W``); ties go to the earlier row (background first).

    With no background row and no tags every pixel is 255 (ignored).
    """
    cams = check_cams(cams, keys)
    prob = probability_stack(cams, space)
    if prob.shape[0] == 0:
        return np.full(cams.shape[1:], IGNORE, dtype=np.uint8)
    return rows_to_labels(first_argmax(prob), keys, space)
