#!/usr/bin/env python
"""Stage 2: CLIP-ES pseudo masks (CAMs, label maps, optional dense CRF) from images and their tags.

    python tools/gen_pseudo_masks.py --img-root DIR --tags STAGE1_DIR|FILE (--dataset NAME | --classes FILE
        [--background FILE]) [--pretrained openai|PATH] --out OUT_DIR [--crf] [--device cpu|cuda]
        [--crf-backend torch|pydensecrf] [--crf-workers N] [--precision fp32|tf32|bf16|fp16]
        [--batch-size N] [--batching grid|mixed]

--tags is stage 1's output folder (its tags.txt is read) or any file of 'ID label label ...' lines
(e.g. ground-truth labels).
Writes OUT_DIR/cams/ID.npz, OUT_DIR/masks/ID.png and, with --crf, OUT_DIR/masks_crf/ID.png.
Rerun the same command to resume; shard with ``torchrun --nproc-per-node N tools/gen_pseudo_masks.py ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.formats.tags import tags_split_file  # noqa: E402
from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import (CONFIDENCE, COUNT, ToolParser,  # noqa: E402
                                     add_batch_arguments, add_class_arguments, add_console_arguments,
                                     add_device_arguments, add_image_arguments, add_weight_arguments,
                                     options_from_args, run_cli)
from tagclip_cls.runtime.errors import one_line  # noqa: E402
from wsss.crf import CRF_BACKENDS, CRF_IMAGE_MODES  # noqa: E402
from wsss.masks import add_cam_arguments  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("--img-root", required=True, help="folder of images (ID.jpg, ID.png, ...)")
    p.add_argument("--tags", required=True,
                   help="stage 1's output folder, or a file of 'ID label label ...' lines such as its tags.txt")
    add_class_arguments(p)
    add_weight_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    add_device_arguments(p)
    add_batch_arguments(p)
    add_cam_arguments(p)
    add_image_arguments(p)
    p.add_argument("--crf", dest="crf_masks", action="store_true", help="also write dense-CRF label maps to OUT/masks_crf")
    p.add_argument("--crf-image", choices=CRF_IMAGE_MODES, default="published",
                   help="CRF colour input: 'published' (BGR minus mean, wrapped to uint8, as published) or 'rgb'")
    p.add_argument("--ignore-below", type=CONFIDENCE,
                   help="with --crf: pixels whose CRF confidence is below this become 255 in masks_crf/; CLIP-ES "
                        "trains on such labels with 0.95 (run_pipeline.py's default for its training labels), "
                        "and scores pseudo masks without it (default: every pixel)")
    p.add_argument("--crf-backend", choices=CRF_BACKENDS,
                   help="dense CRF in pydensecrf (processes) or in torch on --device, straight after each image's "
                        "CAMs (default: torch with cuda, pydensecrf on a CPU)")
    p.add_argument("--crf-workers", type=COUNT, default=1, help="pydensecrf processes (default 1)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad image instead of skipping it")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs exist")
    add_console_arguments(p)
    args = check_arguments(p.parse_args())
    args.tags = str(tags_split_file(args.tags))
    return args


def main() -> None:
    args = parse_args()
    from tagclip_cls.runtime.distributed import rank_info  # torch, open_clip: after parsing
    from wsss.masks.run import MaskRunOptions, run_stage2

    summary = run_stage2(options_from_args(MaskRunOptions, args))
    print(summary.line(rank_info()))
    for image_id, reason in summary.failed.items():
        print(f"failed: {image_id}: {one_line(reason)}", file=sys.stderr)


if __name__ == "__main__":
    run_cli(main)
