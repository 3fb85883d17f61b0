#!/usr/bin/env python
"""Stage 3 speed: seconds per training iteration, comparing two modes. Prints figures; not a test.

``--compare flush`` (CPU): the tiny config with and without flushing denormal floats to zero.
``--compare amp`` (GPU): ``--config`` in fp32 against ``train_seg.py --amp`` (bf16 through
mmengine's AmpOptimWrapper), backbone randomly initialised (no ImageNet weights needed).

Trains ``--config`` (default ``configs/tiny/deeplabv2_r18-tiny_voc-64x64.py``) for --iters
iterations on a synthetic shapes set of ``--size`` pixels a side (crops larger than that are
padded, so the network still runs at the config's crop size), once per mode and repeat, each in
a fresh process (the flush mode is per thread, so intra-op threads must start under it). The
first iterations (cuDNN's algorithm search) are left out of the means. Also prints the last loss
and how many weights and AdamW statistics are denormal at the end.

    python benchmarks/bench_train_seg.py [--iters 70] [--repeats 2] [--threads N]
    python benchmarks/bench_train_seg.py --compare amp --config configs/deeplabv2/...py --iters 30

On a machine shared with other work, prefer --threads 1 and the CPU-time column: OpenMP
threads that wait for a busy core inflate the wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mmengine.hooks import Hook

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tagclip_cls.runtime.denormals import flush_denormals  # noqa: E402
from wsss.seg.runner import AMP_OPTIONS, build_runner, load_config  # noqa: E402
from wsss.seg.synthetic import write_synthetic_voc  # noqa: E402

TINY = REPO / "configs/tiny/deeplabv2_r18-tiny_voc-64x64.py"
COMPARISONS = {"flush": ("off", "on"), "amp": ("fp32", "amp")}
WARMUP_ITERS = 3  # left out of the means: cuDNN's algorithm search, lazy initialisation


class IterationTimes(Hook):
    """Records the wall time, the process's CPU time (all threads; less disturbed by other work
    on a shared machine, see --threads) and the loss of every training iteration."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.losses: list[float] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.start = (time.perf_counter(), time.process_time())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.start[0])
        self.cpu_seconds.append(time.process_time() - self.start[1])
        self.losses.append(float(outputs["loss"]))


def count_denormals(tensors: list[torch.Tensor]) -> tuple[int, int]:
    """(denormal, total) element counts of float tensors."""
    tiny = torch.finfo(torch.float32).tiny
    flat = [t.detach().float().flatten() for t in tensors if t.is_floating_point()]
    return sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in flat), sum(t.numel() for t in flat)


def child(mode: str, config: Path, data: Path, iters: int) -> None:
    """Train in this process in ``mode``; print one JSON line of results."""
    options = {"train_cfg.max_iters": iters, "train_cfg.val_interval": iters + 1,
               "default_hooks.checkpoint.interval": iters + 1, "default_hooks.logger.interval": iters + 1}
    if mode in COMPARISONS["amp"]:
        options["model.backbone.init_cfg"] = None  # random weights: no ImageNet download
        options.update(AMP_OPTIONS if mode == "amp" else {})
    with tempfile.TemporaryDirectory() as work:
        cfg = load_config(config, pseudo_masks=str(data / "pseudo_masks"), data_root=str(data), work_dir=work,
                          cfg_options=options)
        timer = IterationTimes()
        with flush_denormals(mode == "on"):
            runner = build_runner(cfg)
            runner.register_hook(timer)
            runner.train()
        optim = runner.optim_wrapper.optimizer
        weights = count_denormals(list(runner.model.parameters()))
        adam = count_denormals([s[k] for s in optim.state.values() for k in ("exp_avg", "exp_avg_sq")
                                if k in s])
    print(json.dumps(dict(seconds=timer.seconds, cpu_seconds=timer.cpu_seconds, losses=timer.losses, weights=weights, adam=adam)))


def run_child(mode: str, args: argparse.Namespace, data: Path) -> dict:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--config", str(args.config), "--data", str(data),
                           "--iters", str(args.iters)], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.+)", info)
    return f"{name.group(1) if name else 'unknown CPU'}, avx512f: {'avx512f' in info.split()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", choices=COMPARISONS, default="flush")
    p.add_argument("--config", type=Path, default=TINY)
    p.add_argument("--size", type=int, default=64, help="side of the synthetic images")
    p.add_argument("--iters", type=int, default=70)
    p.add_argument("--repeats", type=int, default=2, help="runs per mode, the modes interleaved")
    p.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the training processes")
    p.add_argument("--child", choices=[m for modes in COMPARISONS.values() for m in modes], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.config, args.data, args.iters)
    if args.iters <= WARMUP_ITERS:
        p.error(f"--iters must be above {WARMUP_ITERS}")
    if args.compare == "amp" and not torch.cuda.is_available():
        p.error("--compare amp needs a GPU (mmengine's AmpOptimWrapper runs on CUDA)")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {device}  torch {torch.__version__}  "
          f"threads {args.threads or torch.get_num_threads()}  {args.config.name}, {args.iters} iterations, "
          f"synthetic images {args.size}x{args.size}")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_voc(Path(tmp), num_train=48, num_val=16, size=args.size, seed=3)
        for repeat in range(args.repeats):
            for mode in COMPARISONS[args.compare]:
                r = run_child(mode, args, data)
                s, cpu = r["seconds"][WARMUP_ITERS:], r["cpu_seconds"][WARMUP_ITERS:]
                print(f"{mode:4s} run {repeat + 1}: {statistics.mean(s):.3f} s/iter (median {statistics.median(s):.3f}, "
                      f"max {max(s):.3f}, first {r['seconds'][0]:.2f}); CPU {statistics.mean(cpu):.3f} s/iter; last "
                      f"loss {r['losses'][-1]:.4f}; denormal weights {r['weights'][0]}/{r['weights'][1]}, AdamW "
                      f"stats {r['adam'][0]}/{r['adam'][1]}")


if __name__ == "__main__":
    main()
