#!/usr/bin/env python
"""Stage 3: train an mmsegmentation network on stage-2 pseudo masks.

    python tools/train_seg.py CONFIG --pseudo-masks OUT_DIR/masks [--data-root DIR]
        [--work-dir DIR] [--cfg-options key=value ...] [--resume] [--amp]
    torchrun --nproc_per_node=N tools/train_seg.py CONFIG --pseudo-masks DIR ...

Checkpoints, logs and the last validation's tables (results_val.json / .md) go to the work
dir (default work_dirs/CONFIG_NAME).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.arguments import check_arguments, no_gpu_visible  # noqa: E402
from tagclip_cls.cli import (ToolParser, add_cfg_options_argument, add_launcher_argument,  # noqa: E402
                                     cfg_options_dict, run_cli)
from tagclip_cls.runtime.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ToolParser(__doc__)
    p.add_argument("config", help="mmseg config file, e.g. configs/deeplabv2/...py")
    p.add_argument("--pseudo-masks", required=True, metavar="DIR",
                   help="folder of ID.png pseudo masks used as training labels")
    p.add_argument("--data-root", metavar="DIR", help="dataset root (overrides the config's)")
    p.add_argument("--work-dir", metavar="DIR", help="where checkpoints, logs and tables go")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the work dir")
    p.add_argument("--amp", action="store_true",
                   help="bf16 mixed precision (mmengine's AmpOptimWrapper; GPU only)")
    add_cfg_options_argument(p)
    add_launcher_argument(p)
    args = check_arguments(p.parse_args(argv))
    if args.amp and no_gpu_visible():
        raise UserError("--amp needs a GPU (mmengine's AmpOptimWrapper runs on CUDA); train in fp32 here")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # mmengine, mmseg, torch: after parsing
    from wsss.seg.runner import AMP_OPTIONS, default_launcher, load_config, train

    cfg_options = {**cfg_options_dict(args.cfg_options), **(AMP_OPTIONS if args.amp else {})}
    cfg = load_config(args.config, pseudo_masks=args.pseudo_masks, data_root=args.data_root,
                      work_dir=args.work_dir, cfg_options=cfg_options or None,
                      resume=args.resume, launcher=args.launcher or default_launcher())
    work_dir = train(cfg)
    print(f"[train_seg] done; checkpoints and results_val.json/.md in {work_dir}")


if __name__ == "__main__":
    run_cli(main)
