#!/usr/bin/env python
"""Stage 1 -> stage 2 -> pseudo-mask evaluation -> stage 3 on a dataset, with one command.

    python tools/run_pipeline.py --dataset voc2012 --img-root data/VOCdevkit/VOC2012/JPEGImages \\
        --split data/splits/voc12_train_aug.txt --pretrained ViT-B-16.pt --out runs/voc \\
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

from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import (CONFIDENCE, COUNT, ToolParser, add_batch_arguments,  # noqa: E402
                                     add_cfg_options_argument, add_class_arguments, add_console_arguments,
                                     add_device_arguments, add_image_arguments, add_weight_arguments, cfg_options_dict,
                                     options_from_args, run_cli)
from tagclip_cls.tagging import METHODS  # noqa: E402
from wsss.crf import CRF_BACKENDS, CRF_IMAGE_MODES  # noqa: E402
from wsss.masks import add_cam_arguments  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("--img-root", required=True, help="folder of images")
    p.add_argument("--split", help="file of 'ID [label ...]' lines; default: every image in --img-root")
    add_class_arguments(p)
    add_weight_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    add_device_arguments(p, what="stages 1 and 2")
    add_batch_arguments(p)
    p.add_argument("--method", choices=METHODS, default="tagclip",
                   help="stage 1: tagclip (DMAR+CWR), dmar (no CWR), coarse (neither), global (plain CLIP)")
    add_image_arguments(p)
    add_cam_arguments(p)
    p.add_argument("--no-crf", action="store_true", help="no dense CRF; stage 3 trains on the raw masks")
    p.add_argument("--crf-image", choices=CRF_IMAGE_MODES, default="published",
                   help="CRF colour input: 'published' (BGR minus mean, wrapped to uint8, as published) or 'rgb'")
    p.add_argument("--ignore-below", type=CONFIDENCE, default=0.95,
                   help="stage 3 trains on the CRF labels with pixels below this CRF confidence set to 255 "
                        "(default 0.95, CLIP-ES's confidence-guided labels, in stage2/masks_crf_confT/); "
                        "stage2/masks_crf/, which --gt-masks scores, keep every pixel")
    p.add_argument("--every-pixel", action="store_true", help="stage 3 trains on every pixel of masks_crf/")
    p.add_argument("--crf-backend", choices=CRF_BACKENDS,
                   help="dense CRF in pydensecrf or in torch on --device (default: torch with cuda, else pydensecrf)")
    p.add_argument("--crf-workers", type=COUNT, default=1, help="pydensecrf processes, also scoring the masks")
    p.add_argument("--gt-masks", help="ground-truth label PNGs: the pseudo masks are scored against them")
    p.add_argument("--seg-config", help="mmseg config for stage 3 (without it, stage 3 is skipped)")
    p.add_argument("--data-root", help="dataset root for stage 3 (overrides the config's)")
    add_cfg_options_argument(p)
    p.add_argument("--skip-train", action="store_true", help="stop before stage 3")
    p.add_argument("--report-images", type=COUNT, default=20, help="images in OUT/report.html (0: no report)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="recompute every stage, discarding earlier outputs in --out")
    add_console_arguments(p)
    return check_arguments(p.parse_args())


def main() -> None:
    args = parse_args()
    from wsss.apps.pipeline import PipelineOptions, run_pipeline  # torch, open_clip: after parsing

    options = options_from_args(PipelineOptions, args, drop=("no_crf", "cfg_options", "every_pixel", "ignore_below"),
                                crf_masks=not args.no_crf, ignore_below=None if args.every_pixel else args.ignore_below,
                                cfg_options=cfg_options_dict(args.cfg_options))
    run_pipeline(options, on_stage=lambda status: print(status.line(), flush=True))


if __name__ == "__main__":
    run_cli(main)
