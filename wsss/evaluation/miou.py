"""Segmentation metrics from an integer confusion matrix (mIoU, accuracies).

The matrix is ``n x (n + 1)``: rows are ground-truth classes, columns predictions, and the
extra last column counts pixels predicted 255 (ignored/undecided), which are therefore wrong
for their ground-truth class but never a false positive of any class. Ground truth 255 is left
out. Scores are in percent. IoU and class accuracy are null for classes without ground-truth pixels, and those
classes are left out of the means.

Label files are ``ID.png`` palette/greyscale PNGs of label ids (0 background, class + 1 for
VOC / COCO-Object; coarse 0..26 for COCO-Stuff-27).
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.presets import load_preset
from tagclip_cls.formats.splits import read_split

from tagclip_cls.formats.mask_png import IGNORE, png_ids, read_label_png

COARSE27_NAMES = (
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal",
    "outdoor", "person", "sports", "vehicle", "ceiling", "floor", "food-stuff", "furniture-stuff",
    "rawmaterial", "textile", "wall", "window", "building", "ground", "plant", "sky", "solid",
    "structural", "water",
)
EVAL_DATASETS = ("voc2012", "coco2017", "cocostuff")


def eval_class_names(dataset: str) -> tuple[str, ...]:
    """Label names of an evaluation protocol: background + classes, or the 27 coarse classes."""
    if dataset not in EVAL_DATASETS:
        raise UserError(f"unknown evaluation dataset {dataset!r}; choose one of {', '.join(EVAL_DATASETS)}")
    if dataset == "cocostuff":
        return COARSE27_NAMES
    return ("background", *load_preset(dataset).classes)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """``num_classes x (num_classes + 1)`` int64 counts; gt 255 skipped, pred 255 in the last column.

    Both maps must hold only ids below ``num_classes`` or 255 (``ValueError`` otherwise).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    # one pass over all 256 x 256 (gt, pred) value pairs, then fold and validate the table
    pairs = (gt.astype(np.uint16).ravel() << 8) | pred.astype(np.uint16).ravel()
    table = np.bincount(pairs, minlength=256 * 256).reshape(256, 256)
    for name, counts in (("ground truth", table.sum(axis=1)), ("prediction", table.sum(axis=0))):
        bad = np.flatnonzero(counts[num_classes:IGNORE]) + num_classes
        if bad.size:
            raise ValueError(f"{name} holds label {int(bad[0])}, expected 0..{num_classes - 1} or 255")
    return np.concatenate([table[:num_classes, :num_classes],
                           table[:num_classes, IGNORE:]], axis=1)


def metrics_from_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """mIoU, pixel accuracy, mean class accuracy and per-class IoU/accuracy in percent (null = no GT)."""
    n = len(class_names)
    if confusion.shape != (n, n + 1):
        raise ValueError(f"confusion matrix {confusion.shape} does not fit {n} classes")
    tp = np.diag(confusion[:, :n]).astype(np.float64)
    gt_pixels = confusion.sum(axis=1)
    pred_pixels = confusion[:, :n].sum(axis=0)
    present = gt_pixels > 0
    union = gt_pixels + pred_pixels - tp
    iou = np.where(present, 100 * tp / np.maximum(union, 1), np.nan)
    acc = np.where(present, 100 * tp / np.maximum(gt_pixels, 1), np.nan)
    total = int(gt_pixels.sum())

    def mean(values: np.ndarray) -> float | None:
        return float(values[present].mean()) if present.any() else None

    return {
        "miou": mean(iou),
        "pixel_accuracy": float(100 * tp.sum() / total) if total else None,
        "mean_class_accuracy": mean(acc),
        "num_classes_with_gt": int(present.sum()),
        "classes": [
            {"name": name, "iou": None if np.isnan(iou[i]) else float(iou[i]),
             "accuracy": None if np.isnan(acc[i]) else float(acc[i]),
             "gt_pixels": int(gt_pixels[i]), "pred_pixels": int(pred_pixels[i])}
            for i, name in enumerate(class_names)
        ],
    }


def _image_confusion(args: tuple[Path, Path | None, int]) -> np.ndarray:
    """Confusion matrix of one image; a missing prediction (``None``) counts as all-255."""
    gt_path, pred_path, num_classes = args
    gt = read_label_png(gt_path)
    pred = np.full_like(gt, IGNORE) if pred_path is None else read_label_png(pred_path)
    if pred.shape != gt.shape:
        raise UserError(f"{pred_path}: prediction is {pred.shape[1]}x{pred.shape[0]}, "
                        f"ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]}")
    try:
        return confusion_matrix(pred, gt, num_classes)
    except ValueError as exc:
        culprit = gt_path if "ground truth" in str(exc) else pred_path
        raise UserError(f"{culprit}: {exc}") from None


def list_image_ids(gt_dir: Path, split: str | os.PathLike | None, dataset: str) -> list[str]:
    """Image ids from the split file (published format), or every ``*.png`` in ``gt_dir``."""
    if split is not None:
        return [entry.image_id for entry in read_split(split, load_preset(dataset).classes)]
    return png_ids(gt_dir)


def evaluate_dirs(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, dataset: str,
                  split: str | os.PathLike | None = None, missing_as_wrong: bool = False,
                  workers: int = 0) -> dict[str, Any]:
    """Evaluate ``pred_dir/ID.png`` against ``gt_dir/ID.png`` over the split (or all GT files).

    A missing prediction is a ``UserError`` naming it, unless ``missing_as_wrong`` (then all its
    pixels count as predicted 255, and the ids are listed under ``missing``).
    """
    names = eval_class_names(dataset)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for folder in (pred_dir, gt_dir):
        if not folder.is_dir():
            raise UserError(f"{folder}: directory not found")
    ids = list_image_ids(gt_dir, split, dataset)
    tasks: list[tuple[Path, Path | None, int]] = []
    missing: list[str] = []
    for image_id in ids:
        gt_path, pred_path = gt_dir / f"{image_id}.png", pred_dir / f"{image_id}.png"
        if not gt_path.is_file():
            raise UserError(f"{gt_path}: ground truth not found")
        if not pred_path.is_file():
            if not missing_as_wrong:
                raise UserError(f"{pred_path}: prediction not found (use --missing-as-wrong to count it as wrong)")
            missing.append(image_id)
            tasks.append((gt_path, None, len(names)))
        else:
            tasks.append((gt_path, pred_path, len(names)))
    total = np.zeros((len(names), len(names) + 1), dtype=np.int64)
    if workers <= 1:
        for task in tasks:
            total += _image_confusion(task)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for matrix in pool.map(_image_confusion, tasks, chunksize=64):
                total += matrix
    return {"dataset": dataset, "num_images": len(ids), "missing": missing,
            **metrics_from_confusion(total, names)}


def format_table(result: dict[str, Any]) -> str:
    """A printable per-class table (percent) with the summary lines."""
    def pct(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.2f}"

    width = max(len(c["name"]) for c in result["classes"])
    lines = [f"{'class':<{width}}    IoU    Acc", "-" * (width + 14)]
    lines += [f"{c['name']:<{width}} {pct(c['iou'])} {pct(c['accuracy'])}" for c in result["classes"]]
    lines += ["-" * (width + 14),
              f"mIoU {pct(result['miou'])}  pixel acc {pct(result['pixel_accuracy'])}  "
              f"mean class acc {pct(result['mean_class_accuracy'])}  "
              f"({result['num_images']} images, {result['num_classes_with_gt']} classes with GT"
              + (f", {len(result['missing'])} predictions missing)" if result.get("missing") else ")")]
    return "\n".join(lines)
