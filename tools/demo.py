#!/usr/bin/env python
"""The pipeline (tools/run_pipeline.py) on five photographs that scikit-image ships, with an HTML report.

    python tools/demo.py [--pretrained PATH] [--random-weights] [--out demo_out] [--device cpu|cuda]
        [--train-iters 300] [--skip-train]

Without --pretrained the open_clip 'openai' ViT-B-16 weights are fetched; where that fails
(no network) the demo runs on RANDOM weights and says so, in the console and in the report.
Rerun the same command to resume; the report's path is printed at the end.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import (POSITIVE, ToolParser, add_console_arguments, add_device_arguments,  # noqa: E402
                                     int_at_least, options_from_args, run_cli)


def parse_args() -> argparse.Namespace:
    p = ToolParser(__doc__)
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", help="CLIP checkpoint PATH (e.g. OpenAI's ViT-B-16.pt) or open_clip tag")
    weights.add_argument("--random-weights", action="store_true",
                         help="use random CLIP weights (offline smoke test; results are meaningless)")
    p.add_argument("--out", default="demo_out",
                   help="output folder (default demo_out; with random weights it holds their 586 MB checkpoint)")
    add_device_arguments(p, what="stages 1 and 2 (stage 3 trains on the CPU)")
    p.add_argument("--train-iters", type=POSITIVE, default=300, help="segmenter training iterations (default 300)")
    p.add_argument("--seg-size", type=int_at_least(16), default=64,
                   help="segmenter crop side in pixels, at least 16 (default 64)")
    p.add_argument("--skip-train", action="store_true", help="stop after stage 2 (no segmenter)")
    p.add_argument("--no-crf", action="store_true", help="train on the masks without the dense CRF")
    p.add_argument("--overwrite", action="store_true", help="recompute everything in --out")
    p.add_argument("--cache-dir", help="text-embedding cache (default ~/.cache/tagclip/text)")
    add_console_arguments(p)
    return check_arguments(p.parse_args())


def main() -> None:
    args = parse_args()
    from wsss.apps.demo import DemoOptions, run_demo  # torch, open_clip, mmseg: after parsing

    result = run_demo(options_from_args(DemoOptions, args, drop=("no_crf",), crf=not args.no_crf),
                      on_stage=lambda status: print(status.line(), flush=True))
    print(f"demo weights: {result.weights.description}")
    for note in result.notes[1:]:
        print(note)
    print(f"report: {result.report.resolve()}")


if __name__ == "__main__":
    run_cli(main)
