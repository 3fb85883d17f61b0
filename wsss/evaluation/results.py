"""The one segmentation score computation and the one results schema (JSON + markdown).

Every results file of the project has this form, whoever wrote it (``tools/eval_masks.py``,
the pipeline's ``eval/*.json``, the demo's ``eval/*.json``, ``train_seg.py`` / ``test_seg.py``'s
``results_{val,test}.json``)::

    {"split": "val" | split file | null,       # what was evaluated (null: every GT file)
     "dataset": "voc2012" | "coco2017" | "cocostuff" | "demo" | null,
     "num_images": int | null,                 # images scored
     "missing": [ID, ...],                     # predictions counted as all-wrong
     "iteration": int | null, "checkpoint": str | null,   # segmenter runs
     "mIoU": %, "mAcc": %, "aAcc": %,          # null when no class has ground truth
     "num_classes_evaluated": int,             # classes with ground-truth pixels
     "per_class": {NAME: {"IoU": %, "Acc": %, "gt_pixels": int, "pred_pixels": int}},
     "published": [{"name": str, "mIoU": %}, ...],       # reference numbers, if any
     "variants": [{"name": str, "mIoU": %, "mAcc": %, "aAcc": %,   # optional: the stages of a
                   "num_classes_evaluated": int, "per_class": {...}}, ...]}  # test protocol

``variants`` (written by a stage-3 test protocol, :mod:`wsss.seg.protocol`) scores each of the
protocol's predictions, e.g. ``single_scale``, ``multi_scale`` and ``multi_scale_crf``, with
the same keys as the record; the record's own scores are those of the last one. Records without
it (every other writer, and older files) stay valid.

Scores are in percent at full float precision; only the tables (markdown, console, HTML) round,
to two decimals. mIoU follows the WSSS convention: a class without ground-truth pixels in the
evaluated set has ``IoU``/``Acc`` null and is left out of the means, so a small or partial split
is not dragged down by classes it does not contain. ``aAcc`` is the share of ground-truth pixels
predicted right.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tagclip_cls.runtime.atomic_io import write_text_atomic
from tagclip_cls.runtime.ids import inside_root
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.records import is_count, is_percent, read_json_record

#: keys of every results file, in the order they are written
RESULT_KEYS = ("split", "dataset", "num_images", "missing", "iteration", "checkpoint",
               "mIoU", "mAcc", "aAcc", "num_classes_evaluated", "per_class", "published")
#: keys a results file may have besides :data:`RESULT_KEYS` (absent in older files)
OPTIONAL_KEYS = ("variants",)
#: keys of the score part of a record, which each entry of ``variants`` has besides its name
SCORE_KEYS = ("mIoU", "mAcc", "aAcc", "num_classes_evaluated", "per_class")
#: keys of one ``per_class`` entry
CLASS_KEYS = ("IoU", "Acc", "gt_pixels", "pred_pixels")


def scores_from_areas(intersect: Sequence[float], union: Sequence[float], gt_pixels: Sequence[float],
                      pred_pixels: Sequence[float], class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class IoU/Acc and mIoU/mAcc/aAcc (percent) from per-class pixel counts.

    Returns the score part of the schema: ``mIoU``, ``mAcc``, ``aAcc``,
    ``num_classes_evaluated`` and ``per_class``. ``union`` must equal
    ``gt_pixels + pred_pixels - intersect`` (``ValueError`` otherwise, as for arrays that do not
    fit the class list or counts that cannot be).
    """
    inter, uni, gt, pred = (np.asarray(a, dtype=np.float64) for a in (intersect, union, gt_pixels, pred_pixels))
    n = len(class_names)
    if not inter.shape == uni.shape == gt.shape == pred.shape == (n,):
        raise ValueError(f"area arrays must all have shape ({n},), got "
                         f"{inter.shape}, {uni.shape}, {gt.shape}, {pred.shape}")
    if (inter < 0).any() or (inter > np.minimum(gt, pred)).any():
        raise ValueError("intersection must lie between 0 and the smaller of the ground-truth "
                         "and predicted pixel counts")
    if not np.allclose(uni, gt + pred - inter, rtol=0, atol=0.5):
        raise ValueError("union must equal gt_pixels + pred_pixels - intersect")
    present = gt > 0
    iou = np.where(present, 100 * inter / np.maximum(uni, 1), np.nan)
    acc = np.where(present, 100 * inter / np.maximum(gt, 1), np.nan)

    def value(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    def mean(v: np.ndarray) -> float | None:
        return float(v[present].mean()) if present.any() else None

    return {
        "mIoU": mean(iou),
        "mAcc": mean(acc),
        "aAcc": float(100 * inter.sum() / gt.sum()) if present.any() else None,
        "num_classes_evaluated": int(present.sum()),
        "per_class": {name: {"IoU": value(iou[i]), "Acc": value(acc[i]),
                             "gt_pixels": int(round(gt[i])), "pred_pixels": int(round(pred[i]))}
                      for i, name in enumerate(class_names)},
    }


def areas_from_confusion(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(intersection, union, gt_pixels, pred_pixels) per class of an ``n x (n + 1)`` confusion
    matrix (rows ground truth, columns predictions, last column pixels predicted 255: wrong for
    their ground-truth class, a false positive of none)."""
    n = confusion.shape[0]
    if confusion.ndim != 2 or confusion.shape[1] != n + 1:
        raise ValueError(f"confusion matrix must be n x (n + 1), got {confusion.shape}")
    intersect = np.diag(confusion[:, :n]).astype(np.int64)
    gt = confusion.sum(axis=1).astype(np.int64)
    pred = confusion[:, :n].sum(axis=0).astype(np.int64)
    return intersect, gt + pred - intersect, gt, pred


def scores_from_confusion(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """:func:`scores_from_areas` of a confusion matrix (see :func:`areas_from_confusion`)."""
    if confusion.shape != (len(class_names), len(class_names) + 1):
        raise ValueError(f"confusion matrix {confusion.shape} does not fit {len(class_names)} classes")
    return scores_from_areas(*areas_from_confusion(confusion), class_names)


def results_record(scores: dict[str, Any], *, split: str | os.PathLike | None = None,
                   dataset: str | None = None, num_images: int | None = None,
                   missing: Sequence[str] = (), iteration: int | None = None,
                   checkpoint: str | os.PathLike | None = None,
                   published: Sequence[dict[str, Any]] = (),
                   variants: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The JSON-ready record of one evaluation: ``scores`` (from :func:`scores_from_areas`)
    with its context, every key of :data:`RESULT_KEYS` present, and ``variants`` (named
    scores, ``scores`` being the last one's) when given."""
    record = {
        "split": None if split is None else str(split),
        "dataset": dataset,
        "num_images": num_images,
        "missing": list(missing),
        "iteration": iteration,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        **{key: scores[key] for key in SCORE_KEYS},
        "published": [dict(ref) for ref in published],
    }
    if variants:
        record["variants"] = [{"name": v["name"], **{key: v[key] for key in SCORE_KEYS}} for v in variants]
    problem = schema_problem(record)
    if problem:
        raise ValueError(f"not a valid results record: {problem}")
    return record


def _is_opt(v: Any, kind: type) -> bool:
    return v is None or (isinstance(v, kind) and not isinstance(v, bool))


def schema_problem(record: Any) -> str | None:
    """What makes ``record`` not a results record, or ``None`` when it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    keys = set(record)
    lacking, extra = sorted(set(RESULT_KEYS) - keys), sorted(keys - set(RESULT_KEYS) - set(OPTIONAL_KEYS))
    if lacking or extra:
        return "; ".join(([f"missing keys {lacking}"] if lacking else []) +
                         ([f"unknown keys {extra}"] if extra else []))
    for key in ("split", "dataset", "checkpoint"):
        if not _is_opt(record[key], str):
            return f"{key!r} must be a string or null"
    for key in ("num_images", "iteration"):
        if not (record[key] is None or is_count(record[key])):
            return f"{key!r} must be a non-negative integer or null"
    if not (isinstance(record["missing"], list) and all(isinstance(i, str) for i in record["missing"])):
        return "'missing' must be a list of image ids"
    return _scores_problem(record) or published_problem(record["published"]) or _variants_problem(record)


def _scores_problem(scores: dict[str, Any]) -> str | None:
    """What is wrong with the :data:`SCORE_KEYS` part of a record or variant, or ``None``."""
    per_class = scores["per_class"]
    if not isinstance(per_class, dict) or not per_class:
        return "'per_class' must be a non-empty object"
    for name, row in per_class.items():
        if not isinstance(row, dict) or set(row) != set(CLASS_KEYS):
            return f"per_class[{name!r}] must have exactly the keys {list(CLASS_KEYS)}"
        if not (is_count(row["gt_pixels"]) and is_count(row["pred_pixels"])):
            return f"per_class[{name!r}]: pixel counts must be non-negative integers"
        if not (is_percent(row["IoU"], nullable=True) and is_percent(row["Acc"], nullable=True)):
            return f"per_class[{name!r}]: IoU and Acc must be percentages or null"
        no_gt = row["gt_pixels"] == 0
        if (row["IoU"] is None, row["Acc"] is None) != (no_gt, no_gt):
            return f"per_class[{name!r}]: IoU and Acc are null exactly when there are no ground-truth pixels"
    evaluated = sum(row["gt_pixels"] > 0 for row in per_class.values())
    if scores["num_classes_evaluated"] != evaluated:
        return (f"'num_classes_evaluated' is {scores['num_classes_evaluated']!r} but {evaluated} classes "
                "have ground-truth pixels")
    for key in ("mIoU", "mAcc", "aAcc"):
        if not is_percent(scores[key], nullable=True) or (scores[key] is None) != (evaluated == 0):
            return f"{key!r} must be a percentage (null only when no class has ground truth)"
    return None


def _variants_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a record's optional ``variants``, or ``None``."""
    if "variants" not in record:
        return None
    variants = record["variants"]
    if not (isinstance(variants, list) and variants and all(
            isinstance(v, dict) and set(v) == {"name", *SCORE_KEYS} and isinstance(v["name"], str) and v["name"]
            for v in variants)):
        return f"'variants' must be a non-empty list of objects with exactly the keys {['name', *SCORE_KEYS]}"
    names = [v["name"] for v in variants]
    if len(set(names)) != len(names):
        return f"'variants' names must differ, got {names}"
    for v in variants:
        problem = _scores_problem(v)
        if problem:
            return f"variant {v['name']!r}: {problem}"
    if any(variants[-1][key] != record[key] for key in SCORE_KEYS):
        return "the record's scores must be those of its last variant"
    return None


def published_problem(published: Any) -> str | None:
    """What makes ``published`` not a list of ``{"name": str, "mIoU": percent}`` objects, or ``None``."""
    if not (isinstance(published, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                                and is_percent(r.get("mIoU"), nullable=True) for r in published)):
        return "'published' must be a list of {\"name\": text, \"mIoU\": percent} objects"
    return None


def format_percent(v: float | None) -> str:
    """A table cell of a percentage: two decimals, ``-`` for none (the results tables' and the
    comparison tables' one rounding)."""
    return "-" if v is None else f"{v:.2f}"


def run_description(record: dict[str, Any]) -> str:
    """Which run a record scored, e.g. ``voc2012, val.txt`` or ``val, iter 20000``."""
    parts = [record["dataset"], record["split"] and os.path.basename(record["split"]),
             record["iteration"] is not None and f"iter {record['iteration']}",
             record["checkpoint"] and os.path.basename(record["checkpoint"])]
    return ", ".join(p for p in parts if p)


def coverage_description(record: dict[str, Any]) -> str:
    """What the means cover, e.g. ``4 classes with ground truth, 1449 images, 2 predictions missing``."""
    parts = [f"{record['num_classes_evaluated']} classes with ground truth",
             record["num_images"] is not None and f"{record['num_images']} images",
             record["missing"] and f"{len(record['missing'])} predictions missing (counted as wrong)"]
    return ", ".join(p for p in parts if p)


def markdown_table(record: dict[str, Any]) -> str:
    """Markdown summary (this run beside published mIoU) and the per-class table (2 decimals)."""
    where = run_description(record)
    lines = ["| result | mIoU | mAcc | aAcc |", "|---|---|---|---|"]
    for name, scores in [(v["name"], v) for v in record.get("variants", [])] or [(None, record)]:
        what = ", ".join(p for p in (where, name) if p)
        lines.append(f"| this run{f' ({what})' if what else ''} | {format_percent(scores['mIoU'])} | {format_percent(scores['mAcc'])} "
                     f"| {format_percent(scores['aAcc'])} |")
    for ref in record["published"]:
        lines.append(f"| published: {ref['name']} | {format_percent(ref.get('mIoU'))} | - | - |")
    result = f" Per class: {record['variants'][-1]['name']}." if "variants" in record else ""
    lines += ["", f"Means over the {coverage_description(record)}.{result}", "",
              "| class | IoU | Acc | GT pixels | predicted pixels |", "|---|---|---|---|---|"]
    for name, row in record["per_class"].items():
        lines.append(f"| {name} | {format_percent(row['IoU'])} | {format_percent(row['Acc'])} | {row['gt_pixels']} "
                     f"| {row['pred_pixels']} |")
    return "\n".join(lines) + "\n"


def write_results(record: dict[str, Any], json_path: str | os.PathLike,
                  root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write ``record`` to ``json_path`` and its markdown table beside it (same stem, ``.md``),
    each atomically and inside ``root`` (default: the JSON's folder); returns both paths. A
    record outside the schema is a ``ValueError``."""
    json_path = Path(json_path)
    md_path = json_path.with_suffix(".md")
    if md_path == json_path:
        raise UserError(f"{json_path}: a results JSON file must not end in .md (its table goes there)")
    problem = schema_problem(record)
    if problem:
        raise ValueError(f"not a valid results record: {problem}")
    root = json_path.parent if root is None else root
    for path in (json_path, md_path):  # both checked before either is written
        inside_root(root, path)
    write_text_atomic(json_path, json.dumps(record, indent=2, allow_nan=False) + "\n", root)
    write_text_atomic(md_path, markdown_table(record), root)
    return json_path, md_path


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """The record of a results JSON file; a ``UserError`` naming the file when it cannot be read
    or is not such a file (e.g. written by an older version: score it again)."""
    return read_json_record(path, "results file", schema_problem,
                            "tools/eval_masks.py, run_pipeline.py, the demo and train_seg.py / test_seg.py")
