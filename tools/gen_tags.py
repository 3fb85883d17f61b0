#!/usr/bin/env python
"""Stage 1: training-free multi-label tags with TagCLIP.

    python tools/gen_tags.py --img-root DIR [--split FILE] (--dataset NAME | --classes FILE
        [--background FILE]) [--model ViT-B-16] [--pretrained openai|PATH] --out OUT_DIR
        [--device cpu|cuda] [--batch-size N] [--batching grid|mixed] [--precision fp32|tf32|bf16|fp16]

Shard across processes or machines with ``torchrun --nproc-per-node N tools/gen_tags.py ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import (ToolParser, add_batch_arguments,  # noqa: E402
                                     add_class_arguments, add_console_arguments, add_device_arguments,
                                     add_image_arguments, add_weight_arguments, options_from_args, run_cli)
from tagclip_cls.tagging import METHODS  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("--img-root", required=True, help="folder of images")
    p.add_argument("--split", help="file of 'ID [label ...]' lines; default: every image in --img-root")
    add_class_arguments(p)
    add_weight_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    add_device_arguments(p)
    add_batch_arguments(p)
    p.add_argument("--method", choices=METHODS, default="tagclip",
                   help="tagclip (DMAR+CWR), dmar (no CWR), coarse (neither), global (plain CLIP)")
    add_image_arguments(p)
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--overwrite", action="store_true", help="discard earlier results in --out")
    add_console_arguments(p)
    return check_arguments(p.parse_args())


def main() -> None:
    args = parse_args()
    from tagclip_cls.tagging.run import TagRunOptions, run_stage1  # torch and open_clip: after parsing

    run_stage1(options_from_args(TagRunOptions, args))


if __name__ == "__main__":
    run_cli(main)
