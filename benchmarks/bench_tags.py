#!/usr/bin/env python
"""Stage-1 speed: images per second and peak memory of TagCLIP for ViT-B/16 shapes.

Random weights (same compute as the real model), VOC classes (20 + 25 background words), and
synthetic images: 8 of 230-640 px, or with ``--voc`` 16 of VOC's common sizes (375x500,
500x375, 333x500, ...). Prints text-encoding time (first and cached run), then per precision and
batching mode: seconds per image, images per second (best and range over ``--repeats``
interleaved rounds), peak memory, how often the tags agree with the first precision and mode and
the largest score difference from it. Batching modes (``--batching``): ``single`` (one image per
pass), ``grid`` (``--batch-size`` images of one grid per pass) and ``mixed`` (``--batch-size``
images of any sizes, padded and masked), batched as ``tools/gen_tags.py`` does.
Also prints how many CWR crops each image needed: their number follows the scores, hence the
precision. Runs with denormal floats flushed on a CPU, as the tools do.
Usage: ``python benchmarks/bench_tags.py [--device cuda] [--precisions fp32 bf16 fp16]
[--attentions exact fused] [--voc] [--batching single grid mixed] [--batch-size 8] [--tiny]
[--profile ROWS]``.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from profiling import profile_phases
from tagclip_cls.runtime.cpu_memory import retain_freed_memory
from tagclip_cls.runtime.denormals import flush_denormals
from tagclip_cls.core.models import load_clip
from tagclip_cls.core.presets import load_preset
from tagclip_cls.core.images import prepare_image
from tagclip_cls.core.random_weights import save_random_openai_checkpoint
from tagclip_cls.core.batches import ImageEntry, plan_batches
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig
from tagclip_cls.core.text import load_templates, text_embeddings

SIZES = [(231, 347), (375, 500), (480, 640), (333, 500), (500, 375), (256, 640), (427, 640), (300, 300)]
# VOC's mix: 500x375 landscape dominates, then portrait, 333/334 x 500 (one grid), square, others
VOC_SIZES = [(375, 500)] * 5 + [(500, 375)] * 2 + [(333, 500), (334, 500), (500, 333), (281, 500), (366, 500),
                                                  (353, 500), (500, 500), (400, 500), (375, 500)]
# the test suite's tiny CLIP (tests/conftest.py): a quick check of the modes, not a speed figure
TINY = dict(vision_width=128, vision_layers=12, text_width=64, text_layers=2, embed_dim=64)


def make_images(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]
        path = folder / f"img{i}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches_of(mode: str, paths: list[Path], patch: int, batch_size: int) -> list[list[int]]:
    """Image indices per pass, planned by the tool's :func:`plan_batches`."""
    entries = [ImageEntry(str(i), path) for i, path in enumerate(paths)]
    size = 1 if mode == "single" else batch_size
    batches, _ = plan_batches(entries, patch, None, size, strict=True, batching="grid" if mode == "single" else mode)
    return [[int(e.image_id) for e in batch.entries] for batch in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--voc", action="store_true", help="16 images of VOC's common sizes")
    parser.add_argument("--batching", nargs="+", default=["single"], choices=["single", "grid", "mixed"])
    parser.add_argument("--batch-size", type=int, default=8, help="images per pass of grid and mixed")
    parser.add_argument("--tiny", action="store_true", help="the test suite's tiny CLIP instead of ViT-B/16")
    parser.add_argument("--attentions", nargs="+", default=["exact"], choices=["exact", "fused"],
                        help="attention modes to time (fused: the CWR crops through scaled_dot_product_attention)")
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS",
                        help="after each timing, profile one pass of the first batching mode: time per "
                             "phase, host-device round trips and the ROWS costliest operations")
    args = parser.parse_args()
    with flush_denormals(args.device == "cpu"):  # as the tools run on a CPU
        run(args)


def run(args: argparse.Namespace) -> None:
    retain_freed_memory()  # as the tools do
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_tags_"))
    ckpt = work / "random.pt"
    save_random_openai_checkpoint(str(ckpt), **(TINY if args.tiny else {}))
    clip = load_clip(None, str(ckpt), device)
    preset = load_preset("voc2007")
    names = preset.classes + preset.background_words
    for label in ("first run", "cached run"):
        start = time.perf_counter()
        text = text_embeddings(clip, names, load_templates(), cache_dir=work / "text_cache")
        print(f"text embeddings ({len(names)} classes x 85 templates), {label}: {time.perf_counter() - start:.1f} s")
    paths = make_images(work, VOC_SIZES if args.voc else SIZES)
    images = [prepare_image(p, clip.patch_size).tensor for p in paths]
    plans = {mode: batches_of(mode, paths, clip.patch_size, args.batch_size) for mode in args.batching}
    print(f"device {device}, torch threads {torch.get_num_threads()}, {len(images)} images, "
          f"{len({im.shape for im in images})} grids; passes: " + ", ".join(f"{m} {len(b)}" for m, b in plans.items()))
    reference = None
    for precision, attention in [(p, a) for p in args.precisions for a in args.attentions]:
        tagger = TagCLIP(clip, text, preset.num_classes, TagConfig(precision=precision, attention=attention))
        tagger.score(images[0][None])  # warm-up
        crops = count_crops(tagger)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        times: dict[str, list[float]] = {mode: [] for mode in plans}
        crops_of = dict.fromkeys(plans, 0)
        results: dict[str, list] = {}
        for _ in range(args.repeats):  # modes interleaved: drifting machine load hits them alike
            for mode, batches in plans.items():
                counted_before = crops[0]
                start = time.perf_counter()
                out = [None] * len(images)
                for batch in batches:
                    for i, r in zip(batch, tagger.score([images[i] for i in batch])):
                        out[i] = r
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[mode].append(time.perf_counter() - start)
                crops_of[mode] += crops[0] - counted_before
                results[mode] = out
        for mode, out in results.items():
            best, worst = min(times[mode]), max(times[mode])
            reference = reference or out
            agree = np.mean([a.tags == b.tags for a, b in zip(out, reference)])
            diff = max(float(np.abs(a.scores - b.scores).max()) for a, b in zip(out, reference))
            print(f"{precision} {attention} {mode}: {best / len(images):.3f} s/image, {len(images) / best:.2f} images/s "
                  f"(range {len(images) / worst:.2f}-{len(images) / best:.2f}), peak memory "
                  f"{peak_memory_mb(device):.0f} MiB, tags equal to {args.precisions[0]} {args.batching[0]} on "
                  f"{100 * agree:.0f}% of images, max score difference {diff:.1e}, "
                  f"CWR crops per image {crops_of[mode] / (len(images) * len(times[mode])):.1f}")
        if args.profile:
            batch = next(iter(plans.values()))[0]
            profile_phases(lambda: tagger.score([images[i] for i in batch]), tagger, PHASES, args.profile,
                           f"{precision} {attention}, {len(batch)} images", device.type == "cuda")


# TagCLIP's methods that profiles and operation counts report as phases
PHASES = ("dense_forward", "dense_forward_mixed", "refine", "cwr_crops", "masked_class_probs")


def count_crops(tagger: TagCLIP) -> list[int]:
    """A counter of the CWR crops ``tagger`` computes (their number varies with the precision)."""
    counter = [0]
    real = tagger.masked_class_probs

    def counted(crops: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        counter[0] += len(crops)
        return real(crops, masks)
    tagger.masked_class_probs = counted
    return counter


if __name__ == "__main__":
    main()
