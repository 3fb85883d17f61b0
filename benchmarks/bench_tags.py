#!/usr/bin/env python
"""Stage-1 speed: images per second and peak memory of TagCLIP for ViT-B/16 shapes.

Random weights (same compute as the real model), 8 synthetic images of 230-640 px, VOC classes
(20 + 25 background words). Prints text-encoding time (first and cached run), then per
precision: seconds per image, images per second and peak memory, and how often the tags agree
with fp32. Usage: ``python benchmarks/bench_tags.py [--device cuda] [--precisions fp32 bf16 fp16]``.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tagclip_cls.runtime.cpu_memory import retain_freed_memory
from tagclip_cls.core.models import load_clip
from tagclip_cls.core.presets import load_preset
from tagclip_cls.core.images import prepare_image
from tagclip_cls.core.random_weights import save_random_openai_checkpoint
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig
from tagclip_cls.core.text import load_templates, text_embeddings

SIZES = [(231, 347), (375, 500), (480, 640), (333, 500), (500, 375), (256, 640), (427, 640), (300, 300)]


def make_images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(SIZES):
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        img = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))[:h, :w]
        from PIL import Image
        path = folder / f"img{i}.jpg"
        Image.fromarray(img).save(path, quality=90)
        paths.append(path)
    return paths


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    retain_freed_memory()  # as the tools do
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_tags_"))
    ckpt = work / "vitb16_random.pt"
    save_random_openai_checkpoint(str(ckpt))
    clip = load_clip(None, str(ckpt), device)
    preset = load_preset("voc2007")
    names = preset.classes + preset.background_words
    for label in ("first run", "cached run"):
        start = time.perf_counter()
        text = text_embeddings(clip, names, load_templates(), cache_dir=work / "text_cache")
        print(f"text embeddings ({len(names)} classes x 85 templates), {label}: {time.perf_counter() - start:.1f} s")
    images = [prepare_image(p, clip.patch_size) for p in make_images(work)]
    print(f"device {device}, torch threads {torch.get_num_threads()}, {len(images)} images "
          f"{min(i.orig_size for i in images)}..{max(i.orig_size for i in images)}")
    reference = None
    for precision in args.precisions:
        tagger = TagCLIP(clip, text, preset.num_classes, TagConfig(precision=precision))
        tagger.score(images[0].tensor[None])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        results = []
        for _ in range(args.repeats):
            results = [tagger.score(im.tensor[None])[0] for im in images]
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) / args.repeats
        tags = [r.tags for r in results]
        agree = "" if reference is None else \
            f", tags equal to {args.precisions[0]} on {100 * np.mean([a == b for a, b in zip(tags, reference)]):.0f}% of images"
        reference = reference or tags
        print(f"{precision}: {elapsed / len(images):.3f} s/image, {len(images) / elapsed:.2f} images/s, "
              f"peak memory {peak_memory_mb(device):.0f} MiB{agree}")


if __name__ == "__main__":
    main()
