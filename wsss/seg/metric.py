"""mmseg metric with the WSSS mIoU convention, and a hook writing the result tables."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.evaluation import IoUMetric
from mmseg.registry import HOOKS, METRICS

from wsss.evaluation.published import segmenter_references
from wsss.evaluation.results import results_record, scores_from_areas, write_results


@METRICS.register_module()
class WSSSIoUMetric(IoUMetric):
    """``IoUMetric`` scored by :mod:`wsss.evaluation.results` (means leave out classes without
    ground-truth pixels), once per prediction variant of a test protocol.

    A data sample's ``variant_labels`` (:mod:`wsss.seg.loops`) are scored one by one, the last
    being the result; without them its ``pred_sem_seg`` is. Returns ``mIoU``, ``mAcc`` and
    ``aAcc`` (percent) of the result and ``mIoU_<variant>`` of every variant to the runner, and
    keeps the full scores of the last evaluation (``scores_from_areas``' dict, plus
    ``num_images`` and, with variants, ``variants``: the scores of each, named) in
    ``last_scores`` (main process only), where ``SegResultsTableHook`` picks them up.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_scores: dict[str, Any] | None = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Per-image areas of each variant's labels (``None`` names a plain ``pred_sem_seg``)."""
        num_classes = len(self.dataset_meta["classes"])
        for sample in data_samples:
            preds = sample.get("variant_labels") or {None: sample["pred_sem_seg"]["data"].squeeze()}
            gt = sample["gt_sem_seg"]["data"].squeeze()
            self.results.append({name: self.intersect_and_union(pred, gt.to(pred), num_classes, self.ignore_index)
                                 for name, pred in preds.items()})

    def _scores(self, results: list) -> dict[str, Any]:
        # float64 sums: float32 ones stop counting pixels exactly past 2**24
        intersect, union, pred, gt = (torch.stack(list(a)).to(torch.float64).sum(0) for a in zip(*results))
        return scores_from_areas(intersect.tolist(), union.tolist(), gt.tolist(), pred.tolist(),
                                 self.dataset_meta["classes"])

    def compute_metrics(self, results: list) -> dict[str, float]:
        """Sum the per-image areas of each variant and score them."""
        names = list(results[0])
        by_name = {name: self._scores([r[name] for r in results]) for name in names}
        scores = by_name[names[-1]]
        self.last_scores = {**scores, "num_images": len(results)}
        metrics = {k: scores[k] for k in ("aAcc", "mIoU", "mAcc") if scores[k] is not None}
        if names != [None]:
            self.last_scores["variants"] = [{"name": name, **by_name[name]} for name in names]
            metrics.update({f"mIoU_{name}": by_name[name]["mIoU"] for name in names
                            if by_name[name]["mIoU"] is not None})
        return metrics


@HOOKS.register_module()
class SegResultsTableHook(Hook):
    """After each validation / test, write ``results_{val,test}.{json,md}`` into the work dir
    (the :mod:`wsss.evaluation.results` schema).

    Args:
        published_dataset: a dataset preset (e.g. ``'voc2012'``) whose published segmenter
            figures (``data/published/figures.json``, with their experiment labels) are printed
            beside this run's; ``None``: none.
    """

    priority = "LOW"

    def __init__(self, published_dataset: str | None = None) -> None:
        self.reference = [] if published_dataset is None else segmenter_references(published_dataset)

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
                    checkpoint=runner.cfg.get("load_from") if split == "test" else None,
                    variants=scores.get("variants", ()))
                write_results(record, f"{runner.work_dir}/results_{split}.json", runner.work_dir)
                return

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Tables of the validation that just finished."""
        self._write(runner, runner.val_loop.evaluator, "val")

    def after_test_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Tables of the test run that just finished."""
        self._write(runner, runner.test_loop.evaluator, "test")
