"""mmseg metric with the WSSS mIoU convention, and a hook writing the result tables."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.evaluation import IoUMetric
from mmseg.registry import HOOKS, METRICS

from wsss.evaluation.results import published_problem, results_record, scores_from_areas, write_results
from wsss.seg.errors import SegUserError


@METRICS.register_module()
class WSSSIoUMetric(IoUMetric):
    """``IoUMetric`` scored by :mod:`wsss.evaluation.results` (means leave out classes without
    ground-truth pixels).

    Returns ``mIoU``, ``mAcc`` and ``aAcc`` (percent) to the runner and keeps the full scores
    of the last evaluation (``scores_from_areas``' dict, plus ``num_images``) in
    ``last_scores`` (main process only), where ``SegResultsTableHook`` picks them up.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_scores: dict[str, Any] | None = None

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Sum the per-image areas (in float64: float32 sums stop counting pixels exactly past
        2**24) and score them."""
        intersect, union, pred, gt = (torch.stack(list(a)).to(torch.float64).sum(0) for a in zip(*results))
        scores = scores_from_areas(intersect.tolist(), union.tolist(), gt.tolist(), pred.tolist(),
                                   self.dataset_meta["classes"])
        self.last_scores = {**scores, "num_images": len(results)}
        return {k: scores[k] for k in ("aAcc", "mIoU", "mAcc") if scores[k] is not None}


@HOOKS.register_module()
class SegResultsTableHook(Hook):
    """After each validation / test, write ``results_{val,test}.{json,md}`` into the work dir
    (the :mod:`wsss.evaluation.results` schema).

    Args:
        reference: published results to print beside this run's, e.g.
            ``[dict(name='CLIP-ES DeepLabV2 R101 ImageNet init, VOC val', mIoU=71.1)]``.
    """

    priority = "LOW"

    def __init__(self, reference: Sequence[dict[str, Any]] = ()) -> None:
        self.reference = [dict(r) for r in reference]
        problem = published_problem(self.reference)
        if problem:  # refused when the config is built, not after the first validation
            raise SegUserError(f"SegResultsTableHook reference: {problem}")

    def _write(self, runner: Any, evaluator: Any, split: str) -> None:
        if not is_main_process():
            return
        for metric in evaluator.metrics:
            scores = getattr(metric, "last_scores", None)
            if scores is not None:
                # a test run loads weights without the training state, so its
                # iteration counter says nothing: name the checkpoint instead
                record = results_record(
                    scores, split=split, num_images=scores["num_images"], published=self.reference,
                    iteration=runner.iter if split == "val" else None,
                    checkpoint=runner.cfg.get("load_from") if split == "test" else None)
                write_results(record, f"{runner.work_dir}/results_{split}.json", runner.work_dir)
                return

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Tables of the validation that just finished."""
        self._write(runner, runner.val_loop.evaluator, "val")

    def after_test_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Tables of the test run that just finished."""
        self._write(runner, runner.test_loop.evaluator, "test")
