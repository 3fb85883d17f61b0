#!/usr/bin/env python
"""Write a CLIP checkpoint of RANDOM weights, for trying the tools where real weights can't be had.

    python tools/make_random_weights.py --out weights/    # ViT-B/16 shape, 586 MB
    python tools/gen_tags.py ... --pretrained weights/random_vit_b16.pt

The weights have the compute of the real model of the same shape, and their tags and masks mean
nothing: the checkpoint is marked, every stage records ``random_weights: true`` and every report
made from its outputs carries a red banner. Use OpenAI's ViT-B-16.pt for real results.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import COUNT, POSITIVE, ToolParser, run_cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vision-layers", type=POSITIVE, default=12, help="ViT depth (default 12)")
    p.add_argument("--vision-width", type=POSITIVE, default=768, help="ViT width, a multiple of 64 (default 768)")
    p.add_argument("--patch-size", type=POSITIVE, default=16, help="ViT patch size (default 16)")
    p.add_argument("--seed", type=COUNT, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    args = check_arguments(p.parse_args(argv))
    if args.vision_width % 64:
        p.error("--vision-width must be a multiple of 64 (the head width)")
    return args


def checkpoint_name(args: argparse.Namespace) -> str:
    """``random_vit_b16.pt`` for the default shape, else the shape and seed spelled out."""
    if (args.vision_layers, args.vision_width, args.patch_size, args.seed) == (12, 768, 16, 0):
        return "random_vit_b16.pt"
    return f"random_vit_l{args.vision_layers}_w{args.vision_width}_p{args.patch_size}_seed{args.seed}.pt"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    path = Path(args.out) / checkpoint_name(args)
    if path.exists() and not args.overwrite:
        print(f"{path} exists, kept (use --overwrite to replace)")
        return
    from tagclip_cls.core.random_weights import save_random_openai_checkpoint  # torch: after parsing

    save_random_openai_checkpoint(path, vision_layers=args.vision_layers, vision_width=args.vision_width,
                                  patch_size=args.patch_size, seed=args.seed)
    print(f"wrote {path}: RANDOM weights, for trying the tools only")


if __name__ == "__main__":
    run_cli(main)
