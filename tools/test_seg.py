#!/usr/bin/env python
"""Stage 3: evaluate a trained segmentation checkpoint against the ground truth.

    python tools/test_seg.py CONFIG CHECKPOINT [--data-root DIR] [--work-dir DIR]
        [--protocol {single,published}] [--cfg-options key=value ...]

Writes mIoU, mAcc, aAcc and per-class IoU / accuracy, with the published numbers where the
config has them, to WORK_DIR/results_test.json and results_test.md (work dir defaults to the
checkpoint's folder). Classes without ground-truth pixels are left out of the means.

The test protocol is the config's test_cfg (the CLIP-ES config: the published one, scales 0.5,
0.75 and 1.0 fused by max, then the dense CRF; the results hold the single-scale, multi-scale
and CRF scores); --protocol single runs the fast one-scale test instead.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import (ToolParser, add_cfg_options_argument, add_launcher_argument,  # noqa: E402
                                     cfg_options_dict, run_cli)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("config", help="the mmseg config the checkpoint was trained with")
    p.add_argument("checkpoint", help="checkpoint file (.pth)")
    p.add_argument("--data-root", metavar="DIR", help="dataset root (overrides the config's)")
    p.add_argument("--work-dir", metavar="DIR",
                   help="where results_test.json/.md go (default: the checkpoint's folder)")
    p.add_argument("--protocol", metavar="NAME",
                   help="test protocol: 'single' (one scale) or 'published' (scales 0.5, 0.75, 1 fused "
                        "by max, then the dense CRF; needs a test pipeline at the original size); "
                        "default: the config's test_cfg")
    add_cfg_options_argument(p)
    add_launcher_argument(p)
    return check_arguments(p.parse_args(argv))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from wsss.seg.protocol import get_protocol  # mmengine, mmseg, torch: after parsing
    from wsss.seg.runner import default_launcher, evaluate, load_config

    work_dir = args.work_dir or osp.dirname(osp.abspath(args.checkpoint))
    cfg = load_config(args.config, data_root=args.data_root, work_dir=work_dir,
                      cfg_options=cfg_options_dict(args.cfg_options) or None,
                      launcher=args.launcher or default_launcher())
    if args.protocol is not None:
        get_protocol(args.protocol)  # a wrong name is refused before the model is built
        cfg.test_cfg = dict(type="ProtocolTestLoop", protocol=args.protocol)
    metrics = evaluate(cfg, args.checkpoint)
    if not metrics:  # a test set without ground truth, e.g. the VOC test export
        print(f"[test_seg] no ground truth scored; predictions written under {work_dir}")
        return
    summary = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
    print(f"[test_seg] {summary}; tables in {osp.join(work_dir, 'results_test.json')} and .md")


if __name__ == "__main__":
    run_cli(main)
