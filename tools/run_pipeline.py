#!/usr/bin/env python
"""Stage 1 -> stage 2 -> pseudo-mask evaluation -> stage 3 on a dataset, with one command.

    python tools/run_pipeline.py --dataset voc2012 --img-root data/VOCdevkit/VOC2012/JPEGImages \\
        --split data/voc12/train_aug.txt --pretrained ViT-B-16.pt --out runs/voc \\
        --gt-masks data/VOCdevkit/VOC2012/SegmentationClassAug \\
        --seg-config configs/deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py \\
        --data-root data/VOCdevkit/VOC2012

Outputs: OUT/stage1 (tags), OUT/stage2 (CAMs, masks, masks_crf), OUT/eval (mIoU of the pseudo
masks), OUT/stage3 (segmenter work dir) and OUT/report.html. Rerun the same command after an
interruption: finished stages are skipped, the interrupted one resumes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmengine.config import DictAction  # noqa: E402

from tagclip_cls.runtime.cli import (add_class_arguments, add_console_arguments, add_weight_arguments,  # noqa: E402
                             options_from_args, run_cli)
from wsss.apps.pipeline import PipelineOptions, run_pipeline  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img-root", required=True, help="folder of images")
    p.add_argument("--split", help="file of 'ID [label ...]' lines; default: every image in --img-root")
    add_class_arguments(p)
    add_weight_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="cpu or cuda (stages 1 and 2)")
    p.add_argument("--batch-size", type=int, default=1, help="stage 1 batch size")
    p.add_argument("--no-crf", action="store_true", help="no dense CRF; stage 3 trains on the raw masks")
    p.add_argument("--ignore-below", type=float, help="CRF confidence below which pixels become 255")
    p.add_argument("--workers", type=int, default=1, help="CRF / evaluation processes")
    p.add_argument("--gt-masks", help="ground-truth label PNGs: the pseudo masks are scored against them")
    p.add_argument("--seg-config", help="mmseg config for stage 3 (without it, stage 3 is skipped)")
    p.add_argument("--data-root", help="dataset root for stage 3 (overrides the config's)")
    p.add_argument("--seg-options", nargs="+", action=DictAction, default={}, metavar="KEY=VALUE",
                   help="stage-3 config overrides, e.g. train_cfg.max_iters=1000")
    p.add_argument("--skip-train", action="store_true", help="stop before stage 3")
    p.add_argument("--report-images", type=int, default=20, help="images in OUT/report.html (0: no report)")
    add_console_arguments(p)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    run_pipeline(options_from_args(PipelineOptions, args, drop=("no_crf",), crf=not args.no_crf),
                 on_stage=lambda status: print(status.line(), flush=True))


if __name__ == "__main__":
    run_cli(main)
