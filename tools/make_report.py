#!/usr/bin/env python
"""An HTML report of any run on your own images: tags, CAMs, pseudo masks, predictions, mIoU.

    python tools/make_report.py --tags STAGE1_DIR [--masks STAGE2_DIR] [--seg PRED_DIR]
        [--tables RESULTS.json ...] --img-root DIR (--dataset NAME | --classes FILE
        [--background FILE]) [--max-images N] --out report.html

The class list must be the one the stages ran with (checked against their run configs). A red
banner marks outputs made with random CLIP weights. The page embeds every picture, so it can
be mailed or archived on its own.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.arguments import check_outputs_spare_inputs  # noqa: E402
from tagclip_cls.cli import POSITIVE, ToolParser, add_class_arguments, run_cli  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("--tags", required=True, metavar="DIR",
                   help="stage 1's output folder (tools/gen_tags.py --out), holding tags.jsonl")
    p.add_argument("--masks", metavar="DIR",
                   help="stage 2's output folder (tools/gen_pseudo_masks.py --out): cams/, masks/, masks_crf/")
    p.add_argument("--seg", metavar="DIR", help="folder of segmenter predictions (ID.png label maps)")
    p.add_argument("--tables", nargs="+", action="extend", default=[], metavar="FILE",
                   help="results JSON files of tools/eval_masks.py, train_seg.py or test_seg.py")
    p.add_argument("--img-root", required=True, metavar="DIR", help="folder of the images the stages ran on")
    add_class_arguments(p)
    p.add_argument("--max-images", type=POSITIVE, metavar="N", help="show the first N images only (default: all)")
    p.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")
    args = p.parse_args(argv)
    check_outputs_spare_inputs(vars(args), out_is_folder=False)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from wsss.apps.run_report import RunReportOptions, make_run_report  # numpy, OpenCV, torch: after parsing

    print(f"wrote {make_run_report(RunReportOptions(**vars(args)))}")


if __name__ == "__main__":
    run_cli(main)
