"""Multi-label classification metrics: per-class AP, mAP and overall precision/recall/F1, and
stage 1's ``metrics.json`` that holds them (:func:`classification_metrics`' dict)."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from tagclip_cls.runtime.records import is_count, is_percent, read_json_record

#: keys of every ``metrics.json``, in the order they are written
METRIC_KEYS = ("mAP", "per_class_AP", "precision", "recall", "F1", "num_images")


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Mean of the precision at each positive when ranking by score (descending).

    Ties keep input order (stable sort). Returns None when there is no positive.
    """
    positives = positives.astype(bool)
    if not positives.any():
        return None
    order = np.argsort(-scores, kind="stable")
    hits = positives[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].mean())


def classification_metrics(scores: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                           class_names: Sequence[str]) -> dict:
    """Metrics of ``I x K`` scores and predicted tags against ``I x K`` binary labels.

    mAP averages the AP of classes with at least one positive; precision, recall and F1 are
    overall (micro) counts over every image and class.
    """
    ap = {name: average_precision(scores[:, k], labels[:, k]) for k, name in enumerate(class_names)}
    valid = [v for v in ap.values() if v is not None]
    labels, predictions = labels.astype(bool), predictions.astype(bool)
    tp = int((labels & predictions).sum())
    precision = tp / max(int(predictions.sum()), 1)
    recall = tp / max(int(labels.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"mAP": 100 * float(np.mean(valid)) if valid else None,
            "per_class_AP": {k: None if v is None else 100 * v for k, v in ap.items()},
            "precision": 100 * precision, "recall": 100 * recall, "F1": 100 * f1,
            "num_images": int(len(scores))}


def format_summary(metrics: dict) -> str:
    """A short human-readable table of :func:`classification_metrics`."""
    lines = [f"images {metrics['num_images']}   mAP {_fmt(metrics['mAP'])}   F1 {metrics['F1']:.2f}   "
             f"precision {metrics['precision']:.2f}   recall {metrics['recall']:.2f}"]
    width = max(len(k) for k in metrics["per_class_AP"])
    lines += [f"  {name:<{width}}  AP {_fmt(ap)}" for name, ap in metrics["per_class_AP"].items()]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.2f}"


def metrics_problem(record: Any) -> str | None:
    """What makes ``record`` not a ``metrics.json`` record, or ``None`` when it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if set(record) != set(METRIC_KEYS):
        return f"expected exactly the keys {list(METRIC_KEYS)}, got {sorted(record)}"
    per_class = record["per_class_AP"]
    if not isinstance(per_class, dict) or not per_class:
        return "'per_class_AP' must be a non-empty object"
    bad = next((name for name, ap in per_class.items() if not is_percent(ap, nullable=True)), None)
    if bad is not None:
        return f"per_class_AP[{bad!r}] must be a percentage or null"
    if not is_percent(record["mAP"], nullable=True):
        return "'mAP' must be a percentage or null"
    bad = next((key for key in ("precision", "recall", "F1") if not is_percent(record[key])), None)
    if bad is not None:
        return f"{bad!r} must be a percentage"
    if not is_count(record["num_images"]):
        return "'num_images' must be a non-negative integer"
    return None


def read_metrics(path: str | os.PathLike) -> dict:
    """The record of a ``metrics.json`` file; a ``UserError`` naming the file when it cannot be
    read or is not such a file."""
    return read_json_record(path, "metrics file", metrics_problem, "tools/gen_tags.py")
