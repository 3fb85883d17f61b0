#!/usr/bin/env python
"""End-to-end speed of stages 1 and 2 through the real tools, beside the plain ViT-B/16 forward.

Writes ``--images`` synthetic JPEGs in VOC's size mix (375x500 most common, then 500x375,
333x500, 500x333, the rest 200-640 px a side; smooth colour fields with shapes and mild noise,
deterministic from ``--seed``) and a random ViT-B/16 checkpoint (OpenAI layout) to a temporary
folder, then runs as subprocesses, as a user would:

* stage 1: ``tools/gen_tags.py --dataset voc2007``;
* stage 2: ``tools/gen_pseudo_masks.py --dataset voc2012``, without and with ``--crf``
  (``--crf-backend``, default torch: the CRF then runs straight after each batch's CAMs). Its
  tags are 1-3 random VOC classes per image, not stage 1's: tags from random weights mean
  nothing, and their number sets stage 2's cost.

Per run it reports the start-up (command start to the first output on disk: stage 1's first
batch appended to ``OUT/parts/``, seen by polling; stage 2's first label PNG, by its mtime), the
steady rate (images after the first output over the time from the first output to the last)
and the total wall time. Text embeddings come from a warm cache: small warm-up runs of both
tools (2 images) fill ``--cache-dir`` first, and each timed run's log is checked for the cache
hit. Last, the ceiling: the plain ViT-B/16 image forward (patch embedding with the positional
table resized as the tools do, the transformer blocks with scaled-dot-product attention, pooled
projection; no attention maps, no gradients; checked against open_clip's own forward) at 384x512,
batch ``--batch-size``, in ``--precision``. Both tools get ``--batch-size`` and ``--batching``.

Prints a markdown table and writes the same as JSON with ``--json PATH``. Not a test. A CPU
needs small runs (ViT-B/16 takes seconds per image there):

    python benchmarks/bench_pipeline.py [--device cuda] [--images 256] [--precision fp32|tf32|bf16|fp16]
        [--batch-size 32] [--batching grid|mixed] [--json PATH]
    python benchmarks/bench_pipeline.py --images 8 --batch-size 2 [--tiny]     # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tagclip_cls.core.models import load_clip  # noqa: E402
from tagclip_cls.core.random_weights import save_random_openai_checkpoint  # noqa: E402
from tagclip_cls.core.vit import class_token_features  # noqa: E402
from tagclip_cls.runtime.cpu_memory import retain_freed_memory  # noqa: E402
from tagclip_cls.runtime.denormals import flush_denormals  # noqa: E402
from tagclip_cls.runtime.precision import PRECISIONS, precision_autocast  # noqa: E402
from tagclip_cls.core.batches import BATCHINGS, default_batching  # noqa: E402

# (height, width) and share of the images; the rest are drawn from OTHER_SIDES
VOC_MIX = [((375, 500), 0.40), ((500, 375), 0.15), ((333, 500), 0.10), ((500, 333), 0.05)]
OTHER_SIDES = (200, 640)
CEILING_SIZE = (384, 512)  # a 375x500 image as the tools feed it (sides rounded up to the patch)
NUM_VOC_CLASSES = 20
WARMUP_IMAGES = 2
POLL_S = 0.01
# the test suite's tiny CLIP (tests/conftest.py): a quick check of the script, not a speed figure
TINY = dict(vision_width=128, vision_layers=12, text_width=64, text_layers=2, embed_dim=64)


@dataclass
class StageResult:
    """Timings of one tool run over all images."""

    name: str
    images: int
    first_output_images: int  # images in the first output (stage 1: the first batch)
    startup_s: float  # command start to the first output on disk
    steady_images_per_s: float | None  # after the first output; None with a single output
    total_s: float  # command start to exit
    text_cache_hit: bool  # the log says the text embeddings came from the cache


def image_sizes(count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` (height, width) pairs in VOC's proportions, shuffled; the remainder random."""
    sizes: list[tuple[int, int]] = []
    for size, share in VOC_MIX:
        sizes += [size] * int(round(share * count))
    sizes = sizes[:count]
    while len(sizes) < count:
        sizes.append(tuple(int(s) for s in rng.integers(OTHER_SIDES[0], OTHER_SIDES[1] + 1, 2)))
    return [sizes[i] for i in rng.permutation(count)]


def synthetic_image(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like image: a smooth colour field, a few filled shapes, mild noise. (Pure noise
    would make the dense CRF's bilateral lattice unrealistically large.)"""
    field = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        box = [x0, y0, x0 + int(rng.integers(30, width // 2)), y0 + int(rng.integers(30, height // 2))]
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, (height, width, 3)).astype(np.int16)
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def write_images(folder: Path, count: int, seed: int) -> list[tuple[str, tuple[int, int]]]:
    """``count`` JPEGs ``img00000.jpg ...`` in ``folder``; returns (id, (height, width)) pairs."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    items = []
    for index, (height, width) in enumerate(image_sizes(count, rng)):
        image_id = f"img{index:05d}"
        image = synthetic_image(height, width, np.random.default_rng([seed, 1, index]))
        image.save(folder / f"{image_id}.jpg", quality=90)
        items.append((image_id, (height, width)))
    return items


def random_tags(count: int, seed: int) -> list[list[int]]:
    """1-3 distinct random VOC class indices for each of ``count`` images (mostly 1, as in VOC)."""
    rng = np.random.default_rng([seed, 2])
    tags = []
    for _ in range(count):
        size = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        tags.append(sorted(rng.choice(NUM_VOC_CLASSES, size, replace=False).tolist()))
    return tags


def write_tags(path: Path, ids: list[str], seed: int) -> None:
    """A stage-2 tags file of :func:`random_tags`."""
    lines = [" ".join([image_id, *map(str, tags)]) for image_id, tags in zip(ids, random_tags(len(ids), seed))]
    path.write_text("\n".join(lines) + "\n")


class PartFilePoller:
    """Records when each line (one finished batch) appears in stage 1's part file, and how many
    images it holds, by polling the file every ``POLL_S`` seconds from a thread."""

    def __init__(self, path: Path):
        self.path = path
        self.events: list[tuple[float, int]] = []  # (time.time(), images in the batch)
        self._stop = threading.Event()
        self._offset = 0
        self._pending = b""
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PartFilePoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()  # lines written between the last poll and the exit

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._read()

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        now = time.time()
        self._offset += len(data)
        *lines, self._pending = (self._pending + data).split(b"\n")
        self.events += [(now, len(json.loads(line))) for line in lines if line.strip()]


def run_tool(args: list[str], log: Path) -> float:
    """Run ``python tools/...`` with ``args``; returns the wall time. Exits with the log's tail on failure."""
    start = time.time()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if code:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        sys.exit(f"error: {args[0]} exited with {code}; its log {log} ends:\n{tail}")
    return time.time() - start


def stage_result(name: str, start: float, total: float, events: list[tuple[float, int]], images: int,
                 log: Path) -> StageResult:
    """Start-up, steady rate and total of one run from its output events ``(time, images)``."""
    events = sorted(events)
    done = sum(n for _, n in events)
    if done != images:
        sys.exit(f"error: {name}: {done} of {images} images have outputs (log: {log})")
    (first_time, first_count), last_time = events[0], events[-1][0]
    steady = (images - first_count) / (last_time - first_time) if last_time > first_time else None
    return StageResult(name, images, first_count, first_time - start, steady, total,
                       "text embeddings from cache" in log.read_text())


def common_flags(args: argparse.Namespace, checkpoint: Path, cache: Path) -> list[str]:
    """Flags both tools get: the random weights, the shared text cache, device and precision."""
    return ["--pretrained", str(checkpoint), "--cache-dir", str(cache), "--device", args.device,
            "--precision", args.precision, "--no-progress"]


def batch_flags(args: argparse.Namespace) -> list[str]:
    """Both stages' batching flags (the warm-up uses them too: its recorded settings then match)."""
    return ["--batch-size", str(args.batch_size), "--batching", args.batching]


def run_stage1(args: argparse.Namespace, work: Path, flags: list[str], images: int) -> StageResult:
    """Time ``tools/gen_tags.py`` on all images; a batch is done when its line is in the part file."""
    out = work / "stage1"
    log = work / "stage1.log"
    start = time.time()
    with PartFilePoller(out / "parts" / "rank-0-of-1.jsonl") as poller:
        total = run_tool(["tools/gen_tags.py", "--img-root", str(work / "images"), "--dataset", "voc2007",
                          "--out", str(out), *flags, *batch_flags(args)], log)
    return stage_result(f"stage 1 tags, batch {args.batch_size} {args.batching}", start, total, poller.events,
                        images, log)


def run_stage2(args: argparse.Namespace, work: Path, flags: list[str], ids: list[str], crf: bool) -> StageResult:
    """Time ``tools/gen_pseudo_masks.py`` (with ``--crf`` or not) on all images."""
    name = "stage2_crf" if crf else "stage2"
    out, log = work / name, work / f"{name}.log"
    crf_flags = ["--crf", "--crf-backend", args.crf_backend, "--crf-workers", str(args.crf_workers)] if crf else []
    start = time.time()
    total = run_tool(["tools/gen_pseudo_masks.py", "--img-root", str(work / "images"), "--tags", str(work / "tags.txt"),
                      "--dataset", "voc2012", "--out", str(out), *flags, *batch_flags(args), *crf_flags], log)
    # each image's last file: the label PNG, or with --crf the CRF mask (written atomically: mtime = done)
    final = out / ("masks_crf" if crf else "masks")
    events = [(p.stat().st_mtime, 1) for p in final.glob("*.png")]
    batches = f"batch {args.batch_size} {args.batching}"
    label = f"stage 2 masks + CRF ({args.crf_backend}), {batches}" if crf else f"stage 2 masks (CAMs, no CRF), {batches}"
    return stage_result(label, start, total, events, len(ids), log)


def warm_up(args: argparse.Namespace, work: Path, flags: list[str], ids: list[str]) -> None:
    """Both tools on the first images: fills the text cache (and the OS file cache) before timing."""
    subset = ids[:WARMUP_IMAGES]
    (work / "warmup_split.txt").write_text("\n".join(subset) + "\n")
    (work / "warmup_tags.txt").write_text(
        "".join(line + "\n" for line in (work / "tags.txt").read_text().splitlines()[:WARMUP_IMAGES]))
    run_tool(["tools/gen_tags.py", "--img-root", str(work / "images"), "--split", str(work / "warmup_split.txt"),
              "--dataset", "voc2007", "--out", str(work / "warmup1"), *flags, *batch_flags(args)],
             work / "warmup1.log")
    run_tool(["tools/gen_pseudo_masks.py", "--img-root", str(work / "images"), "--tags",
              str(work / "warmup_tags.txt"), "--dataset", "voc2012", "--out", str(work / "warmup2"), *flags,
              *batch_flags(args)],
             work / "warmup2.log")


def vit_forward(visual: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The plain image embedding through the tools' fused path (:func:`class_token_features`,
    ``scaled_dot_product_attention``: flash attention where the device has it). Not open_clip's
    own forward at this size: that goes through ``nn.MultiheadAttention``'s fast path, which on a
    CPU under bf16 autocast took 4 s per layer for a batch of 2 instead of 16 ms for one image
    (torch 2.14.1, ViT-B/16, 769 tokens)."""
    return class_token_features(visual, images, fused=True)


def vit_ceiling(checkpoint: Path, device: torch.device, precision: str, batch: int,
                min_seconds: float) -> tuple[float, float]:
    """Images per second of :func:`vit_forward` at ``CEILING_SIZE`` (after two warm-up passes,
    passes are repeated for at least ``min_seconds`` and three passes), and the largest relative
    difference between it and open_clip's own forward, in fp32, on one image of the model's
    native size (where open_clip's positional table fits)."""
    visual = load_clip(None, str(checkpoint), device).visual
    images = torch.randn(batch, 3, *CEILING_SIZE, generator=torch.Generator().manual_seed(0)).to(device)
    native = torch.randn(1, 3, *visual.image_size, generator=torch.Generator().manual_seed(1)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), flush_denormals(device.type == "cpu"):  # as stage 1 runs on a CPU
        ours, theirs = vit_forward(visual, native), visual(native)
        difference = float((ours - theirs).abs().max() / theirs.abs().max())
        with precision_autocast(precision, device.type):
            for _ in range(2):
                vit_forward(visual, images)
            sync()
            passes, start = 0, time.perf_counter()
            while passes < 3 or time.perf_counter() - start < min_seconds:
                vit_forward(visual, images)
                passes += 1
            sync()
            seconds = time.perf_counter() - start
    return batch * passes / seconds, difference


def machine_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's model name (and core count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return f"{cpu}, {len(os.sched_getaffinity(0))} CPUs"


def markdown(report: dict) -> str:
    """The report as a short list of settings and a table of figures."""
    def fmt(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [f"- machine: {report['machine']}; device {report['device']}; torch {report['torch']}; {report['date']}; "
             f"load average {report['load_average'][0]:.1f} at the start, {report['load_average'][1]:.1f} at the end",
             f"- {report['model']}, precision {report['precision']}, {report['images']} images "
             f"({report['size_mix']}), text embeddings from a warm cache: {report['warm_text_cache']}",
             "",
             "| run | images | start-up s (first output) | steady images/s | total s |",
             "|---|---|---|---|---|"]
    for stage in report["stages"]:
        lines.append(f"| {stage['name']} | {stage['images']} | {fmt(stage['startup_s'], 1)} "
                     f"({stage['first_output_images']} img) | {fmt(stage['steady_images_per_s'], 2)} "
                     f"| {fmt(stage['total_s'], 1)} |")
    ceiling = report["ceiling"]
    lines.append(f"| {ceiling['name']} | batch {ceiling['batch']} | - | {ceiling['images_per_s']:.2f} | - |")
    lines.append(f"\nThe ceiling's forward (scaled-dot-product attention) against open_clip's own in fp32: "
                 f"largest relative difference {ceiling['max_relative_difference_to_open_clip']:.1e}.")
    return "\n".join(lines)


def size_mix(items: list[tuple[str, tuple[int, int]]]) -> str:
    """``375x500: 103, 500x375: 38, ..., other: 77`` (height x width)."""
    counts = {f"{h}x{w}": sum(size == (h, w) for _, size in items) for (h, w), _ in VOC_MIX}
    counts["other"] = len(items) - sum(counts.values())
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--batch-size", type=int, default=32, help="both stages' --batch-size, and the ceiling's batch")
    p.add_argument("--batching", choices=BATCHINGS,
                   help="both stages' --batching (default: the tools' for --device: mixed on a GPU, grid on a CPU)")
    p.add_argument("--crf-backend", choices=["torch", "pydensecrf"], default="torch",
                   help="stage 2's CRF (pydensecrf runs after all CAMs: its start-up then includes them)")
    p.add_argument("--crf-workers", type=int, default=1, help="pydensecrf processes")
    p.add_argument("--seed", type=int, default=0, help="of the images, tags and random weights")
    p.add_argument("--cache-dir", type=Path,
                   help="text-embedding cache (default: a new one in the temporary folder; an earlier run's "
                        "with the same --seed and --tiny saves the warm-up's encoding, minutes on a CPU)")
    p.add_argument("--ceiling-seconds", type=float, default=3.0, help="least time spent timing the ceiling")
    p.add_argument("--tiny", action="store_true", help="the test suite's tiny CLIP instead of ViT-B/16")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (images, outputs, logs)")
    args = p.parse_args()
    if args.images < WARMUP_IMAGES:
        p.error(f"--images must be at least {WARMUP_IMAGES}")
    args.batching = args.batching or default_batching(args.device)
    retain_freed_memory()  # as the tools do
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    load_before = os.getloadavg()[0]  # other jobs on the machine: OpenMP threads then wait for cores
    try:
        checkpoint, cache = work / "random_weights.pt", args.cache_dir or work / "text_cache"
        save_random_openai_checkpoint(checkpoint, seed=args.seed, **(TINY if args.tiny else {}))
        items = write_images(work / "images", args.images, args.seed)
        ids = [image_id for image_id, _ in items]
        write_tags(work / "tags.txt", ids, args.seed)
        flags = common_flags(args, checkpoint, cache)
        warm_up(args, work, flags, ids)
        stages = [run_stage1(args, work, flags, len(ids)),
                  run_stage2(args, work, flags, ids, crf=False),
                  run_stage2(args, work, flags, ids, crf=True)]
        model = "tiny CLIP (width 128, 12 layers)" if args.tiny else "ViT-B/16"
        rate, difference = vit_ceiling(checkpoint, device, args.precision, args.batch_size, args.ceiling_seconds)
        ceiling = {"name": f"plain {model} forward at {CEILING_SIZE[0]}x{CEILING_SIZE[1]} (ceiling)",
                   "batch": args.batch_size, "images_per_s": rate, "max_relative_difference_to_open_clip": difference}
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = {"machine": machine_name(device), "device": str(device), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": [load_before, os.getloadavg()[0]],
              "model": f"{model}, random weights",
              "precision": args.precision, "batch_size": args.batch_size, "batching": args.batching,
              "images": len(items), "size_mix": size_mix(items),
              "warm_text_cache": all(s.text_cache_hit for s in stages),
              "stages": [asdict(s) for s in stages], "ceiling": ceiling}
    print(markdown(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
