"""mmseg metric with the WSSS mIoU convention, and a hook writing the result tables."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.evaluation import IoUMetric
from mmseg.registry import HOOKS, METRICS

from wsss.seg.evaluation import SegScores, results_dict, scores_from_areas, write_results


@METRICS.register_module()
class WSSSIoUMetric(IoUMetric):
    """``IoUMetric`` whose means leave out classes without ground-truth pixels.

    Returns ``mIoU``, ``mAcc`` and ``aAcc`` (percent) to the runner and keeps the full
    per-class ``SegScores`` of the last evaluation in ``last_scores`` (main process only),
    where ``SegResultsTableHook`` picks them up.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_scores: SegScores | None = None

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Sum the per-image areas and score them."""
        intersect, union, _, gt = (torch.stack(list(a)).sum(0) for a in zip(*results))
        scores = scores_from_areas(intersect.tolist(), union.tolist(), gt.tolist(),
                                   self.dataset_meta["classes"])
        self.last_scores = scores
        return {k: v for k, v in (("aAcc", scores.aacc), ("mIoU", scores.miou),
                                  ("mAcc", scores.macc)) if v is not None}


@HOOKS.register_module()
class SegResultsTableHook(Hook):
    """After each validation / test, write ``results_{val,test}.{json,md}`` into the work dir.

    Args:
        reference: published results to print beside this run's, e.g.
            ``[dict(name='CLIP-ES DeepLabV2 R101 ImageNet init, VOC val', mIoU=71.1)]``.
    """

    priority = "LOW"

    def __init__(self, reference: Sequence[dict[str, Any]] = ()) -> None:
        self.reference = [dict(r) for r in reference]

    def _write(self, runner: Any, evaluator: Any, split: str) -> None:
        if not is_main_process():
            return
        for metric in evaluator.metrics:
            scores = getattr(metric, "last_scores", None)
            if scores is not None:
                # a test run loads weights without the training state, so its
                # iteration counter says nothing: name the checkpoint instead
                record = results_dict(
                    scores, split=split, reference=self.reference,
                    iteration=runner.iter if split == "val" else None,
                    checkpoint=runner.cfg.get("load_from") if split == "test" else None)
                write_results(record, runner.work_dir, f"results_{split}")
                return

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Tables of the validation that just finished."""
        self._write(runner, runner.val_loop.evaluator, "val")

    def after_test_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Tables of the test run that just finished."""
        self._write(runner, runner.test_loop.evaluator, "test")
