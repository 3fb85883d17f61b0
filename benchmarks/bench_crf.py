#!/usr/bin/env python
"""Dense-CRF speed: pydensecrf in 1..N worker processes against the PyTorch backend
(:mod:`wsss.crf.permutohedral`) one image at a time and batched. Prints a table. Not a test.

The images are scikit-image's photographs (astronaut, chelsea, coffee, rocket) scaled to a long
side of 500 px (VOC-sized), each as the published wrapped-BGR CRF image and as plain RGB, with
3-label probability stacks (softmax of upsampled random logits); the published CRF settings.
pydensecrf runs in a spawned process pool (single-threaded workers, pool start-up excluded); the
torch backend runs in this process with ``--threads`` intra-op threads. Figures are the best of
``--repeats`` passes over the set. Also prints how far the torch Q is from pydensecrf's, the peak
resident memory of one torch image on the CPU, and on CUDA the peak GPU memory.

    python benchmarks/bench_crf.py [--device cpu|cuda] [--threads 1 2] [--workers 1 2] [--batch 8]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.runtime.cpu_memory import retain_freed_memory  # noqa: E402
from wsss.crf import CRFParams, dense_crf  # noqa: E402
from wsss.crf import bilateral_image  # noqa: E402
from wsss.masks.crf import single_threaded_children  # noqa: E402
from wsss.crf.permutohedral import dense_crf_torch, dense_crf_torch_batch  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
LONG_SIDE = 500
LABELS = 3
PARAMS = CRFParams()


def photographs(long_side: int = LONG_SIDE) -> dict[str, np.ndarray]:
    """scikit-image's colour photographs, resized (bilinear) to ``long_side`` pixels on the long side."""
    import skimage.data
    from PIL import Image

    out = {}
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage.data, name)())
        scale = long_side / max(image.size)
        out[name] = np.asarray(image.resize((round(image.width * scale), round(image.height * scale)),
                                            Image.BILINEAR))
    return out


def blob_probabilities(labels: int, height: int, width: int, seed: int) -> np.ndarray:
    """A smooth ``labels x H x W`` float32 probability stack: softmax of upsampled random logits."""
    rng = np.random.default_rng(seed)
    logits = torch.tensor(rng.normal(0.0, 3.0, (1, labels, 6, 8)), dtype=torch.float32)
    up = torch.nn.functional.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return torch.softmax(up, dim=1)[0].numpy()


def inputs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, CRF image, probabilities) for each photograph in both image modes."""
    items = []
    for index, (name, rgb) in enumerate(photographs().items()):
        prob = blob_probabilities(LABELS, *rgb.shape[:2], seed=index)
        items += [(f"{name}/{mode}", bilateral_image(rgb, mode), prob) for mode in ("published", "rgb")]
    return items


def _pydensecrf_one(item: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return dense_crf(item[0], item[1], PARAMS)


def best_seconds(run: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Best wall time of ``repeats`` calls of ``run`` (after one warm-up call)."""
    run()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def bench_pydensecrf(items, workers: int, repeats: int) -> tuple[float, list[np.ndarray]]:
    """Seconds per pass over ``items`` in a pool of ``workers`` spawned single-threaded processes."""
    pairs = [(image, prob) for _, image, prob in items]
    with single_threaded_children(), ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) \
            as pool:
        results: list[np.ndarray] = []

        def run() -> None:
            results[:] = list(pool.map(_pydensecrf_one, pairs))
        seconds = best_seconds(run, repeats, lambda: None)
    return seconds, results


def torch_peak_rss_mib(image: np.ndarray, prob: np.ndarray) -> float:
    """Peak resident memory one :func:`dense_crf_torch` call adds on the CPU (Linux: the peak is
    reset through /proc/self/clear_refs after start-up), measured in a fresh process."""
    code = ("import sys, numpy as np, torch\n"
            "from pathlib import Path\n"
            "from wsss.crf import CRFParams\n"
            "from wsss.crf.permutohedral import dense_crf_torch\n"
            "def status(key):\n"
            "    line = next(l for l in Path('/proc/self/status').read_text().splitlines() if l.startswith(key))\n"
            "    return int(line.split()[1]) / 1024\n"
            "torch.set_num_threads(1)\n"
            "image, prob = np.load(sys.argv[1]), np.load(sys.argv[2])\n"
            "dense_crf_torch(image[:1, :1], prob[:, :1, :1], CRFParams())\n"
            "before = status('VmRSS')\n"
            "Path('/proc/self/clear_refs').write_text('5')\n"
            "dense_crf_torch(image, prob, CRFParams())\n"
            "print(status('VmHWM') - before)\n")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "image.npy", image)
        np.save(Path(tmp) / "prob.npy", prob)
        paths = [str(Path(tmp) / f"{name}.npy") for name in ("image", "prob")]
        out = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent.parent)
    return float(out.stdout.strip().splitlines()[-1])


def agreement(reference: list[np.ndarray], other: list[np.ndarray]) -> str:
    """Worst per-image mean |dQ| and arg-max agreement against pydensecrf."""
    mean_dq = max(float(np.abs(a - b).mean()) for a, b in zip(reference, other))
    same = min(float((a.argmax(0) == b.argmax(0)).mean()) for a, b in zip(reference, other))
    return f"mean|dQ| <= {mean_dq:.1e}, argmax equal >= {100 * same:.3f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, nargs="+", default=[1, len(os.sched_getaffinity(0))],
                   help="torch intra-op thread counts to time")
    p.add_argument("--workers", type=int, nargs="+", default=[1, len(os.sched_getaffinity(0))],
                   help="pydensecrf worker-process counts to time")
    p.add_argument("--batch", type=int, default=8, help="images per dense_crf_torch_batch call")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    retain_freed_memory()  # as the tools do
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    device = torch.device(args.device)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {cpu}  {len(os.sched_getaffinity(0))} CPUs  "
          f"load {os.getloadavg()[0]:.2f}  torch {torch.__version__}  device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    items = inputs()
    print(f"{len(items)} images ({', '.join(f'{i[1].shape[1]}x{i[1].shape[0]}' for i in items[::2])}), "
          f"{LABELS} labels, {PARAMS.iterations} iterations, best of {args.repeats}")
    rows = []
    reference: list[np.ndarray] = []
    for workers in args.workers:
        seconds, reference = bench_pydensecrf(items, workers, args.repeats)
        rows.append((f"pydensecrf, {workers} worker process(es)", len(items) / seconds, ""))

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    thread_counts = args.threads if device.type == "cpu" else [torch.get_num_threads()]
    for threads in thread_counts:
        torch.set_num_threads(threads)
        where = f"{threads} thread(s)" if device.type == "cpu" else str(device)
        single: list[np.ndarray] = []
        batched: list[np.ndarray] = []

        def run_single() -> None:
            single[:] = [dense_crf_torch(image, prob, PARAMS, device) for _, image, prob in items]

        def run_batched() -> None:
            batched[:] = []
            for start in range(0, len(items), args.batch):
                chunk = items[start:start + args.batch]
                batched.extend(dense_crf_torch_batch([i[1] for i in chunk], [i[2] for i in chunk], PARAMS, device))

        for label, run, out in (("one image per call", run_single, single),
                                (f"batches of {args.batch}", run_batched, batched)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = best_seconds(run, args.repeats, sync)
            note = agreement(reference, out)
            if device.type == "cuda":
                note += f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MiB"
            rows.append((f"torch {where}, {label}", len(items) / seconds, note))

    width = max(len(r[0]) for r in rows)
    print(f"{'backend':{width}s}  img/s   vs pydensecrf")
    for name, rate, note in rows:
        print(f"{name:{width}s}  {rate:5.2f}   {note}")
    name, image, prob = items[0]
    print(f"torch CPU peak resident memory of one {image.shape[1]}x{image.shape[0]} image ({name}, 1 thread): "
          f"{torch_peak_rss_mib(image, prob):.0f} MiB above the process after start-up")


if __name__ == "__main__":
    main()
