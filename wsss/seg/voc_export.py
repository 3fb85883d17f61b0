"""PASCAL VOC test predictions in the evaluation server's layout (the test set has no public
ground truth: its mIoU comes from the server).

The VOC devkit (``VOCinit.m``: ``VOCopts.seg.clsrespath``) reads a competition's class
segmentations from ``results/VOC2012/Segmentation/COMP_test_cls/ID.png``: one indexed PNG per
test image, at its size, with the VOC colour map (0 background, class ``c`` as ``c``). CLIP-ES
trains with outside data (CLIP), competition ``comp6``.
"""
from __future__ import annotations

import os.path as osp
from pathlib import Path
from typing import Any, Sequence

from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from tagclip_cls.formats.mask_png import write_label_png
from tagclip_cls.runtime.ids import check_image_id


def voc_results_dir(work_dir: str | Path, competition: str = "comp6") -> Path:
    """The folder of a competition's test-set PNGs under ``work_dir``."""
    return Path(work_dir) / "results" / "VOC2012" / "Segmentation" / f"{competition}_test_cls"


@HOOKS.register_module()
class VOCTestExportHook(Hook):
    """Writes each test prediction (``pred_sem_seg``) as ``ID.png`` into
    :func:`voc_results_dir` of the work dir, for the evaluation server.

    Args:
        competition: ``comp5`` (VOC training data only) or ``comp6`` (outside data as well).
    """

    priority = "LOW"

    def __init__(self, competition: str = "comp6") -> None:
        if competition not in ("comp5", "comp6"):
            raise ValueError(f"competition must be 'comp5' or 'comp6', got {competition!r}")
        self.competition = competition

    def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                        outputs: Sequence[Any] | None = None) -> None:
        """Write the batch's label maps."""
        folder = voc_results_dir(runner.work_dir, self.competition)
        for sample in outputs or ():
            image_id = check_image_id(osp.splitext(osp.basename(sample.img_path))[0], sample.img_path)
            write_label_png(folder / f"{image_id}.png", sample.pred_sem_seg.data[0].cpu().numpy(), runner.work_dir)

    def after_test_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Say where the predictions are."""
        runner.logger.info(f"VOC test predictions for the evaluation server in "
                           f"{voc_results_dir(runner.work_dir, self.competition)}")
