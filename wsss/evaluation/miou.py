"""mIoU of label-map folders: per-image confusion matrices summed, then scored by
:mod:`wsss.evaluation.results` (the one score computation and results schema).

The matrix is ``n x (n + 1)``: rows are ground-truth classes, columns predictions, and the
extra last column counts pixels predicted 255 (ignored/undecided), which are therefore wrong
for their ground-truth class but never a false positive of any class. Ground truth 255 is left
out. Scores are in percent; classes without ground-truth pixels have null IoU/Acc and are left
out of the means.

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
from tagclip_cls.core.presets import coarse27_names, load_preset
from tagclip_cls.formats.splits import read_split

from tagclip_cls.formats.mask_png import IGNORE, png_ids, read_label_png
from wsss.evaluation.results import coverage_description, results_record, run_description, scores_from_confusion

def eval_class_names(dataset: str) -> tuple[str, ...]:
    """Label names of a preset's evaluation protocol: background + classes (VOC, COCO-Object),
    or the 27 coarse classes (COCO-Stuff)."""
    preset = load_preset(dataset)
    if preset.clip_es.label_space == "coarse27":
        return coarse27_names(preset)
    return ("background", *preset.classes)


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


def evaluate_ids(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, ids: Sequence[str],
                 class_names: Sequence[str], *, dataset: str | None = None,
                 split: str | os.PathLike | None = None, missing_as_wrong: bool = False,
                 workers: int = 0) -> dict[str, Any]:
    """The results record (:mod:`wsss.evaluation.results` schema) of ``pred_dir/ID.png`` against
    ``gt_dir/ID.png`` over ``ids``, labels ``0..len(class_names) - 1`` (255 ignored).

    A missing ground truth is a ``UserError``, and so is a missing prediction unless
    ``missing_as_wrong`` (then all its pixels count as predicted 255, and the ids are listed
    under ``missing``). ``dataset`` and ``split`` are recorded as given.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    num_classes = len(class_names)
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
            tasks.append((gt_path, None, num_classes))
        else:
            tasks.append((gt_path, pred_path, num_classes))
    total = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    if workers <= 1:
        for task in tasks:
            total += _image_confusion(task)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for matrix in pool.map(_image_confusion, tasks, chunksize=64):
                total += matrix
    return results_record(scores_from_confusion(total, class_names), split=split, dataset=dataset,
                          num_images=len(tasks), missing=missing)


def evaluate_dirs(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, dataset: str,
                  split: str | os.PathLike | None = None, missing_as_wrong: bool = False,
                  workers: int = 0) -> dict[str, Any]:
    """Evaluate ``pred_dir/ID.png`` against ``gt_dir/ID.png`` over the split (or all GT files)
    with the labels of the evaluation protocol ``dataset``; see :func:`evaluate_ids`."""
    names = eval_class_names(dataset)
    for folder in (Path(pred_dir), Path(gt_dir)):
        if not folder.is_dir():
            raise UserError(f"{folder}: directory not found")
    ids = list_image_ids(Path(gt_dir), split, dataset)
    return evaluate_ids(pred_dir, gt_dir, ids, names, dataset=dataset, split=split,
                        missing_as_wrong=missing_as_wrong, workers=workers)


def format_table(result: dict[str, Any]) -> str:
    """A printable per-class table of a results record (percent, 2 decimals) with the summary line."""
    def pct(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.2f}"

    per_class = result["per_class"]
    width = max(len("class"), *(len(name) for name in per_class))
    lines = [f"{'class':<{width}}    IoU    Acc", "-" * (width + 14)]
    lines += [f"{name:<{width}} {pct(row['IoU'])} {pct(row['Acc'])}" for name, row in per_class.items()]
    where = run_description(result)
    lines += ["-" * (width + 14),
              f"mIoU {pct(result['mIoU'])}  mAcc {pct(result['mAcc'])}  aAcc {pct(result['aAcc'])}  "
              f"({where + ': ' if where else ''}{coverage_description(result)})"]
    return "\n".join(lines)
