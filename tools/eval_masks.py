#!/usr/bin/env python
"""Evaluate label PNGs (pseudo masks or predictions) against ground-truth PNGs: mIoU and accuracies.

    python tools/eval_masks.py --pred DIR --gt DIR --dataset NAME [--split FILE] [--out OUT_DIR]

Prints the per-class table; with --out, also writes OUT_DIR/results.json and OUT_DIR/results.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.core.presets import available_presets  # noqa: E402
from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import COUNT, ToolParser, run_cli  # noqa: E402

RESULTS_NAME = "results.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ToolParser(__doc__)
    parser.add_argument("--pred", required=True, help="folder of predicted ID.png label maps")
    parser.add_argument("--gt", required=True, help="folder of ground-truth ID.png label maps")
    parser.add_argument("--dataset", required=True, choices=available_presets(),
                        help="preset whose labels the PNGs hold: background + classes (VOC, COCO), "
                             "or the 27 coarse classes (cocostuff)")
    parser.add_argument("--split", help="split file (ID [labels]) listing the images; default: every GT PNG")
    parser.add_argument("--out", help=f"output folder for {RESULTS_NAME} and its markdown table results.md")
    parser.add_argument("--missing-as-wrong", action="store_true",
                        help="count a missing prediction as all-wrong instead of stopping")
    parser.add_argument("--read-workers", type=COUNT, default=0, help="processes reading the PNGs (0: inline)")
    return check_arguments(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from wsss.evaluation.miou import evaluate_dirs, format_table  # numpy and PIL: after parsing
    from wsss.evaluation.results import write_results

    result = evaluate_dirs(args.pred, args.gt, args.dataset, args.split,
                           missing_as_wrong=args.missing_as_wrong, workers=args.read_workers)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_results(result, Path(args.out) / RESULTS_NAME, args.out)
    print(format_table(result))


if __name__ == "__main__":
    run_cli(main)
