#!/usr/bin/env python
"""Compare runs with each other and with the paper's published figures: one table per benchmark.

    python tools/compare_results.py RUN [RUN ...] [--out DIR] [--highlight POINTS]

A RUN is an output folder of tools/gen_tags.py (metrics.json: mAP), tools/eval_masks.py
(results.json: pseudo-mask mIoU) or tools/train_seg.py / test_seg.py (results_val.json,
results_test.json and their variants: segmenter mIoU), or one such JSON file. The first run of
each benchmark is the baseline R1; the others get their deltas against it, overall and per
class. Runs of one benchmark must score the same classes. The paper's figures of each benchmark
join its table: with a delta where scored on the runs' classes, else as references without one.
Prints the tables as markdown; with --out, also writes DIR/compare.md and DIR/compare.html.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import ToolParser, float_between, run_cli  # noqa: E402

DEFAULT_HIGHLIGHT = 1.0  # percentage points


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders or metrics JSON files; the first is R1")
    p.add_argument("--out", metavar="DIR", help="folder for compare.md and compare.html")
    p.add_argument("--highlight", type=float_between(0.0, 100.0), default=DEFAULT_HIGHLIGHT, metavar="POINTS",
                   help=f"highlight deltas at least this large, in percentage points (default {DEFAULT_HIGHLIGHT:g})")
    return check_arguments(p.parse_args(argv))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from wsss.apps.compare import compare_runs, write_outputs
    from wsss.apps.compare_tables import html_page, markdown

    comparisons = compare_runs(args.runs)
    text = markdown(comparisons, args.highlight)
    print(text)
    if args.out:
        for path in write_outputs(args.out, [text, html_page(comparisons, args.highlight)]):
            print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main)
