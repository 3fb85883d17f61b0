#!/usr/bin/env python
"""Stage 3: train an mmsegmentation network on stage-2 pseudo masks.

    python tools/train_seg.py CONFIG --pseudo-masks OUT_DIR/masks [--data-root DIR]
        [--work-dir DIR] [--cfg-options key=value ...] [--resume]
    torchrun --nproc_per_node=N tools/train_seg.py CONFIG --pseudo-masks DIR ...

Checkpoints, logs and the last validation's tables (results_val.json / .md) go to the work
dir (default work_dirs/CONFIG_NAME).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmengine.config import DictAction  # noqa: E402

from wsss.seg.errors import SegUserError  # noqa: E402
from wsss.seg.runner import default_launcher, load_config, train, user_message  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="mmseg config file, e.g. configs/deeplabv2/...py")
    p.add_argument("--pseudo-masks", required=True, metavar="DIR",
                   help="folder of ID.png pseudo masks used as training labels")
    p.add_argument("--data-root", metavar="DIR", help="dataset root (overrides the config's)")
    p.add_argument("--work-dir", metavar="DIR", help="where checkpoints, logs and tables go")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the work dir")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, metavar="KEY=VALUE",
                   help="override config entries, e.g. train_cfg.max_iters=1000")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"],
                   default=default_launcher(), help="job launcher (pytorch under torchrun)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, pseudo_masks=args.pseudo_masks, data_root=args.data_root,
                          work_dir=args.work_dir, cfg_options=args.cfg_options,
                          resume=args.resume, launcher=args.launcher)
        work_dir = train(cfg)
    except SegUserError as err:
        raise SystemExit(f"error: {user_message(err)}") from None
    print(f"[train_seg] done; checkpoints and results_val.json/.md in {work_dir}")


if __name__ == "__main__":
    main()
