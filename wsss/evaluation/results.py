"""Segmentation scores from accumulated pixel areas, and the JSON/markdown result tables.

mIoU follows the WSSS convention: a class with no ground-truth pixels in the evaluated set
is left out of the mean (its IoU is reported as ``None``), so a small or partial split is not
dragged down by classes it does not contain.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tagclip_cls.runtime.atomic_io import write_text_atomic


@dataclass(frozen=True)
class SegScores:
    """Per-class and summary scores in percent (``None`` where there is no ground truth)."""

    class_names: tuple[str, ...]
    iou: tuple[float | None, ...]
    acc: tuple[float | None, ...]
    gt_pixels: tuple[int, ...]
    miou: float | None
    macc: float | None
    aacc: float | None

    @property
    def num_evaluated(self) -> int:
        """How many classes had ground-truth pixels (and so enter the means)."""
        return sum(n > 0 for n in self.gt_pixels)


def scores_from_areas(intersect: Sequence[float], union: Sequence[float],
                      gt_area: Sequence[float], class_names: Sequence[str]) -> SegScores:
    """Turn per-class pixel counts (intersection, union, ground truth) into scores."""
    inter = np.asarray(intersect, dtype=np.float64)
    uni = np.asarray(union, dtype=np.float64)
    gt = np.asarray(gt_area, dtype=np.float64)
    if not inter.shape == uni.shape == gt.shape == (len(class_names),):
        raise ValueError(f"area arrays must all have shape ({len(class_names)},), got "
                         f"{inter.shape}, {uni.shape}, {gt.shape}")
    present = gt > 0
    iou = np.where(present, inter / np.maximum(uni, 1), np.nan)
    acc = np.where(present, inter / np.maximum(gt, 1), np.nan)

    def pct(x: float) -> float:
        return round(float(x) * 100, 2)

    def mean(v: np.ndarray) -> float | None:
        return pct(v[present].mean()) if present.any() else None

    return SegScores(
        class_names=tuple(class_names),
        iou=tuple(pct(v) if ok else None for v, ok in zip(iou, present)),
        acc=tuple(pct(v) if ok else None for v, ok in zip(acc, present)),
        gt_pixels=tuple(int(n) for n in gt),
        miou=mean(iou), macc=mean(acc),
        aacc=pct(inter.sum() / gt.sum()) if present.any() else None)


def results_dict(scores: SegScores, *, split: str, iteration: int | None = None,
                 checkpoint: str | None = None,
                 reference: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The JSON-ready record of one evaluation (with published numbers when given)."""
    return {
        "split": split,
        "iteration": iteration,
        "checkpoint": checkpoint,
        "mIoU": scores.miou,
        "mAcc": scores.macc,
        "aAcc": scores.aacc,
        "num_classes_evaluated": scores.num_evaluated,
        "per_class": {name: {"IoU": iou, "Acc": acc, "gt_pixels": n}
                      for name, iou, acc, n in zip(scores.class_names, scores.iou,
                                                   scores.acc, scores.gt_pixels)},
        "published": list(reference),
    }


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown_table(record: dict[str, Any]) -> str:
    """Markdown summary (this run beside published mIoU) and the per-class table."""
    it, ckpt = record["iteration"], record["checkpoint"]
    where = record["split"] + (f", iter {it}" if it is not None else "")
    where += f", {os.path.basename(ckpt)}" if ckpt else ""
    lines = ["| result | mIoU | mAcc | aAcc |", "|---|---|---|---|",
             f"| this run ({where}) | {_fmt(record['mIoU'])} | {_fmt(record['mAcc'])} "
             f"| {_fmt(record['aAcc'])} |"]
    for ref in record["published"]:
        lines.append(f"| published: {ref['name']} | {_fmt(ref.get('mIoU'))} | - | - |")
    lines += ["", f"mIoU over the {record['num_classes_evaluated']} classes with ground-truth "
                  "pixels.", "", "| class | IoU | Acc | GT pixels |", "|---|---|---|---|"]
    for name, row in record["per_class"].items():
        lines.append(f"| {name} | {_fmt(row['IoU'])} | {_fmt(row['Acc'])} | {row['gt_pixels']} |")
    return "\n".join(lines) + "\n"


def write_results(record: dict[str, Any], out_dir: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """Write ``STEM.json`` and ``STEM.md`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    write_text_atomic(json_path, json.dumps(record, indent=2, allow_nan=False) + "\n")
    write_text_atomic(md_path, markdown_table(record))
    return json_path, md_path
