#!/usr/bin/env python
"""Stage 1's torch operations per image, by phase: what a GPU would launch (views aside). Prints figures.

Counts every operation dispatched to a kernel (``TorchDispatchMode``) while TagCLIP scores
``bench_tags.py``'s 16 synthetic VOC-sized images, one per pass and in one mixed pass, with the
test suite's tiny 12-layer CLIP (the count does not depend on the width) and the VOC preset's 45
text classes. ``--gpu-branches`` takes, on the CPU, the branches a GPU takes (torch's resize
kernel for the CWR crops, one product for DMAR's boxed columns), so a CPU-only machine can count
what a GPU would run.

    python benchmarks/count_ops.py [--gpu-branches]
"""
from __future__ import annotations

import argparse
import collections
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import tagclip_cls.tagging.tagclip as tagclip_module
from bench_tags import PHASES, TINY, VOC_SIZES, make_images
from profiling import labelled_phases
from tagclip_cls.core.images import prepare_image
from tagclip_cls.core.models import load_clip
from tagclip_cls.core.random_weights import save_random_openai_checkpoint
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig


class OpCounter(TorchDispatchMode):
    """Counts dispatched operations under the innermost phase entered with :meth:`phase`."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self.phases = ["other"]

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.phases.append(name)
        try:
            yield
        finally:
            self.phases.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[self.phases[-1]] += 1
        return func(*args, **(kwargs or {}))


def take_gpu_branches() -> None:
    """Make TagCLIP take, on the CPU, the branches it takes on a GPU."""
    tagclip_module.resize_bilinear = lambda image, size: F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False)[0]
    boxed_columns = tagclip_module.boxed_columns
    tagclip_module.boxed_columns = lambda attn, probs, keys, one_product: boxed_columns(attn, probs, keys, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-branches", action="store_true")
    args = parser.parse_args()
    if args.gpu_branches:
        take_gpu_branches()
    with tempfile.TemporaryDirectory() as work:
        checkpoint = Path(work) / "tiny.pt"
        torch.manual_seed(0)
        save_random_openai_checkpoint(checkpoint, **TINY)
        clip = load_clip(None, str(checkpoint), "cpu")
        images = [prepare_image(path, clip.patch_size).tensor for path in make_images(Path(work), VOC_SIZES)]
    text = F.normalize(torch.randn(45, TINY["embed_dim"], generator=torch.Generator().manual_seed(0)), dim=-1)
    tagger = TagCLIP(clip, text, 20, TagConfig())
    counter = OpCounter()
    print(f"{'GPU' if args.gpu_branches else 'CPU'} branches, {len(images)} images, 45 text classes")
    for label, batches in [("one image per pass", [[i] for i in range(len(images))]),
                           (f"one mixed pass of {len(images)}", [list(range(len(images)))])]:
        counter.counts.clear()
        with labelled_phases(tagger, PHASES, counter.phase), counter:
            for batch in batches:
                tagger.score([images[i] for i in batch])
        per_image = {phase: round(n / len(images)) for phase, n in counter.counts.items()}
        print(f"{label}: {sum(counter.counts.values()) / len(images):.0f} operations per image; by phase {per_image}")


if __name__ == "__main__":
    main()
