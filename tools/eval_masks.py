#!/usr/bin/env python
"""Evaluate label PNGs (pseudo masks or predictions) against ground-truth PNGs: mIoU and accuracies."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.errors import UserError  # noqa: E402
from wsss.evaluation.miou import EVAL_DATASETS, evaluate_dirs, format_table  # noqa: E402
from wsss.evaluation.results import write_results  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pred", required=True, help="folder of predicted ID.png label maps")
    parser.add_argument("--gt", required=True, help="folder of ground-truth ID.png label maps")
    parser.add_argument("--dataset", required=True, choices=EVAL_DATASETS,
                        help="voc2012 (21 classes), coco2017 (81), cocostuff (27 coarse)")
    parser.add_argument("--split", help="split file (ID [labels]) listing the images; default: every GT PNG")
    parser.add_argument("--out", help="write the results here as JSON (and a markdown table beside it, "
                        "same name ending in .md)")
    parser.add_argument("--missing-as-wrong", action="store_true",
                        help="count a missing prediction as all-wrong instead of stopping")
    parser.add_argument("--workers", type=int, default=0, help="processes for reading files (0: inline)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = evaluate_dirs(args.pred, args.gt, args.dataset, args.split,
                               missing_as_wrong=args.missing_as_wrong, workers=args.workers)
        if args.out:
            write_results(result, args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
