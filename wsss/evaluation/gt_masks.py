"""Ground-truth label PNGs for evaluation, and image labels read off label masks.

* COCO-Object (81 labels: 0 background, class + 1): painted from the instances JSON with
  pycocotools. Instances are painted largest first, so a small object on top of a large one
  stays visible. Crowd regions (``iscrowd=1``) are 255 by default (``crowd="ignore"``: painted
  first, so any ordinary instance overlapping them wins), or painted as their class like any
  other instance (``crowd="class"``).
* COCO-Stuff-27: the 164k ``stuffthingmaps`` PNGs (value 0..181, 255 unlabeled) mapped through
  the preset's ``png_value_to_class`` and ``class_to_coarse27``; 255 and the 11 unused values
  become 255.
* VOC2012 masks already exist as PNGs (SegmentationClass / SegmentationClassAug).

All writers are atomic and resumable: an existing output is kept unless ``overwrite``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from tagclip_cls.formats.annotations import (check_coco_segmentation, coco_annotation_category, coco_category_index,
                                             coco_entry, coco_image_id, coco_image_size, coco_images_by_id, coco_int,
                                             load_coco_json)
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.ids import path_inside
from tagclip_cls.runtime.numbers import is_json_int
from tagclip_cls.core.presets import Preset

from tagclip_cls.formats.mask_png import IGNORE, png_ids, read_label_png, write_label_png

CROWD_MODES = ("ignore", "class")


def _segmentation_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """The RLE of a checked (:func:`check_coco_segmentation`) polygon list, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def _is_crowd(ann: dict[str, Any], where: str) -> bool:
    value = ann.get("iscrowd", 0)
    if not is_json_int(value) or value not in (0, 1):
        raise UserError(f"{where}: iscrowd must be 0 or 1, got {value!r}")
    return value == 1


def coco_instance_mask(image: dict[str, Any], annotations: Sequence[dict[str, Any]],
                       category_index: dict[int, int], crowd: str = "ignore",
                       source: str | os.PathLike = "COCO JSON") -> np.ndarray:
    """The ``H x W`` uint8 COCO-Object label map of one image (see module doc for the order).

    The image's size and every segmentation are checked first (one-line errors naming
    ``source`` and the entry); regions are kept as RLEs and decoded one at a time."""
    if crowd not in CROWD_MODES:
        raise ValueError(f"unknown crowd mode {crowd!r}; choose one of {', '.join(CROWD_MODES)}")
    height, width = coco_image_size(image, coco_entry(source, "image", image))
    labels = np.zeros((height, width), dtype=np.uint8)
    painted: list[tuple[int, dict[str, Any], int]] = []
    for ann in annotations:
        where = coco_entry(source, "annotation", ann)
        check_coco_segmentation(ann.get("segmentation"), height, width, where)
        rle = _segmentation_rle(ann["segmentation"], height, width)
        if crowd == "ignore" and _is_crowd(ann, where):
            labels[mask_utils.decode(rle).astype(bool)] = IGNORE
        else:
            painted.append((int(mask_utils.area(rle)), rle, coco_annotation_category(ann, category_index, source) + 1))
    for _, rle, value in sorted(painted, key=lambda item: -item[0]):
        labels[mask_utils.decode(rle).astype(bool)] = value
    return labels


def write_coco_masks(instances_json: str | os.PathLike, out_dir: str | os.PathLike, num_classes: int,
                     crowd: str = "ignore", keep_empty: bool = False, overwrite: bool = False,
                     progress: bool = True) -> tuple[int, int]:
    """Write ``out_dir/ID.png`` COCO-Object masks for every annotated image; returns (written, skipped).

    Images without annotations are skipped unless ``keep_empty`` (then all background). Ids,
    categories and image sizes are checked before the first mask is written.
    """
    data = load_coco_json(instances_json)
    category = coco_category_index(data, num_classes, instances_json)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        coco_annotation_category(ann, category, instances_json)
        by_image.setdefault(coco_int(ann, "image_id", coco_entry(instances_json, "annotation", ann)), []).append(ann)
    images = [(i, image) for i, image in coco_images_by_id(data, instances_json) if keep_empty or i in by_image]
    outputs = []
    for _, image in images:
        where = coco_entry(instances_json, "image", image)
        coco_image_size(image, where)
        outputs.append(path_inside(out_dir, f"{coco_image_id(image.get('file_name'), where)}.png"))
    written = skipped = 0
    for (image_id, image), out in tqdm(zip(images, outputs), total=len(images), desc="coco masks", unit="img",
                                       disable=not progress):
        if out.exists() and not overwrite:
            skipped += 1
            continue
        write_label_png(out, coco_instance_mask(image, by_image.get(image_id, []), category, crowd, instances_json),
                        out_dir)
        written += 1
    return written, skipped


def _check_stuff_values(values: np.ndarray, preset: Preset, path: Path) -> None:
    limit = len(preset.clip_es.png_value_to_class)
    bad = (values >= limit) & (values != IGNORE)
    if bad.any():
        raise UserError(f"{path}: value {int(values[bad][0])} is not a COCO-Stuff label (0..{limit - 1} or 255)")


def write_stuff_masks(src_dir: str | os.PathLike, out_dir: str | os.PathLike, preset: Preset,
                      ids: Sequence[str] | None = None, overwrite: bool = False,
                      progress: bool = True) -> tuple[int, int]:
    """Map COCO-Stuff PNGs (``src_dir/ID.png``) to coarse-27 masks in ``out_dir``; returns (written, skipped)."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not src_dir.is_dir():
        raise UserError(f"{src_dir}: directory not found")
    if out_dir.resolve() == src_dir.resolve():
        raise UserError(f"{out_dir}: the output folder is the source folder; choose another --out")
    if ids is None:
        ids = png_ids(src_dir)
    outputs = [path_inside(out_dir, f"{image_id}.png") for image_id in ids]
    _, to_coarse = preset.clip_es.png_value_lookups()
    written = skipped = 0
    for image_id, out in tqdm(zip(ids, outputs), total=len(ids), desc="stuff masks", unit="img",
                              disable=not progress):
        if out.exists() and not overwrite:
            skipped += 1
            continue
        src = src_dir / f"{image_id}.png"
        values = read_label_png(src)
        _check_stuff_values(values, preset, src)
        write_label_png(out, to_coarse[values], out_dir)
        written += 1
    return written, skipped


def mask_labels(values: np.ndarray, preset: Preset, path: Path) -> list[int]:
    """Class indices present in one mask: VOC-style (value = class + 1) or COCO-Stuff PNG values."""
    present = np.unique(values)
    present = present[present != IGNORE]
    if preset.clip_es.png_value_to_class:
        _check_stuff_values(present, preset, path)
        to_class, _ = preset.clip_es.png_value_lookups()
        return sorted({int(c) for c in to_class[present] if c != IGNORE})
    bad = present[present > preset.num_classes]
    if bad.size:
        raise UserError(f"{path}: value {int(bad[0])} is not a {preset.name} label (0..{preset.num_classes} or 255)")
    return [int(v) - 1 for v in present if v > 0]


def mask_split_rows(mask_dir: str | os.PathLike, preset: Preset,
                    ids: Sequence[str] | None = None, progress: bool = True) -> list[tuple[str, list[int]]]:
    """Rows ``(ID, classes present)`` read off ``mask_dir/ID.png`` (all PNGs when ``ids`` is None)."""
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise UserError(f"{mask_dir}: directory not found")
    if ids is None:
        ids = png_ids(mask_dir)
    rows = []
    for image_id in tqdm(ids, desc="mask labels", unit="img", disable=not progress):
        path = mask_dir / f"{image_id}.png"
        rows.append((image_id, mask_labels(read_label_png(path), preset, path)))
    return rows
