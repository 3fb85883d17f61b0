#!/usr/bin/env python
"""Torch operations per image of stage 1, stage 2 or the torch CRF, by phase: what a GPU would launch (views aside). Prints figures.

Counts every operation dispatched to a kernel (``TorchDispatchMode``) on ``bench_tags.py``'s 16
synthetic VOC-sized images, one per pass and in one mixed pass, with the test suite's tiny
12-layer CLIP (the count does not depend on the width). Stage 1: TagCLIP scores them against the
VOC preset's 45 text classes. Stage 2: CLIP-ES makes the CAMs of 1-3 random tags per image (20
classes, 2 background words). CRF: the torch dense CRF of the images with 3-label random
probability stacks, each image alone against all of them in one lattice, as ``gen_pseudo_masks.py``
runs a batch's CRF. ``--gpu-branches`` takes, on the CPU, the branches a GPU takes
(stage 1: torch's resize kernel for the CWR crops, one product for DMAR's boxed columns; stage 2:
Grad-CAM on the device, one product for the boxed affinity), so a CPU-only machine can count
what a GPU would run.

    python benchmarks/count_ops.py [--stage 1|2|crf] [--gpu-branches]
"""
from __future__ import annotations

import argparse
import collections
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import tagclip_cls.tagging.tagclip as tagclip_module
import wsss.masks.cams as cams_module
from bench_masks import PHASES as MASK_PHASES
from bench_tags import PHASES, TINY, VOC_SIZES, make_images
from profiling import labelled_phases
from tagclip_cls.core.images import load_rgb, prepare_image
from tagclip_cls.core.models import LoadedClip, load_clip
from tagclip_cls.core.random_weights import save_random_openai_checkpoint
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig
from wsss.crf import CRFParams
from wsss.crf.permutohedral import dense_crf_torch_batch
from wsss.masks.cams import ClipES


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
    """Make TagCLIP and CLIP-ES take, on the CPU, the branches they take on a GPU."""
    tagclip_module.resize_bilinear = lambda image, size: F.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False)[0]
    boxed_columns = tagclip_module.boxed_columns
    tagclip_module.boxed_columns = lambda attn, probs, keys, one_product: boxed_columns(attn, probs, keys, True)
    cams_module.grad_cam = cams_module.grad_cam_on_device
    cams_module.refine_with_affinity = lambda trans, cams, masks: boxed_columns(trans @ trans, cams.T, masks.T, True).T


Pass = Callable[[list[int]], object]  # runs the images of these indices in one pass


def stage1(clip: LoadedClip, images: list[torch.Tensor]) -> tuple[object, tuple[str, ...], Pass]:
    """TagCLIP against 45 random unit text embeddings: the scorer, its phases, one pass."""
    text = F.normalize(torch.randn(45, TINY["embed_dim"], generator=torch.Generator().manual_seed(0)), dim=-1)
    tagger = TagCLIP(clip, text, 20, TagConfig())
    return tagger, PHASES, lambda batch: tagger.score([images[i] for i in batch])


def stage2(clip: LoadedClip, images: list[torch.Tensor]) -> tuple[object, tuple[str, ...], Pass]:
    """CLIP-ES with 20 class and 2 background texts and 1-3 random tags per image: the CAM
    generator, its phases, one pass (CAMs at the input size)."""
    g = torch.Generator().manual_seed(0)
    text = F.normalize(torch.randn(22, TINY["embed_dim"], generator=g), dim=-1)
    generator = ClipES(clip, text[:20], text[20:])
    tags = [torch.randperm(20, generator=g)[:int(torch.randint(1, 4, (1,), generator=g))].tolist() for _ in images]
    return generator, MASK_PHASES, lambda batch: generator.batch(
        [images[i] for i in batch], [tags[i] for i in batch], [tuple(images[i].shape[1:]) for i in batch])


def dense_crf(paths: list[Path]) -> tuple[object, tuple[str, ...], Pass]:
    """The torch CRF of the images (RGB as read) with random 3-label probability stacks; no phases."""
    rgbs = [load_rgb(path) for path in paths]
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(3), rgb.shape[:2]).transpose(2, 0, 1).astype(np.float32) for rgb in rgbs]
    return None, (), lambda batch: dense_crf_torch_batch([rgbs[i] for i in batch], [probs[i] for i in batch],
                                                        CRFParams())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("1", "2", "crf"), default="1")
    parser.add_argument("--gpu-branches", action="store_true")
    args = parser.parse_args()
    if args.gpu_branches:
        take_gpu_branches()
    with tempfile.TemporaryDirectory() as work:
        checkpoint = Path(work) / "tiny.pt"
        torch.manual_seed(0)
        save_random_openai_checkpoint(checkpoint, **TINY)
        clip = load_clip(None, str(checkpoint), "cpu")
        paths = make_images(Path(work), VOC_SIZES)
        images = [prepare_image(path, clip.patch_size).tensor for path in paths]
        if args.stage == "crf":
            owner, phases, run = dense_crf(paths)
        else:
            owner, phases, run = (stage1 if args.stage == "1" else stage2)(clip, images)
    counter = OpCounter()
    what = {"1": "45 text classes", "2": "1-3 tags each", "crf": "3 labels"}[args.stage]
    print(f"{'stage ' * (args.stage != 'crf')}{args.stage}, {'GPU' if args.gpu_branches else 'CPU'} branches, "
          f"{len(images)} images, {what}")
    together = "one lattice for" if args.stage == "crf" else "one mixed pass of"
    for label, batches in [("one image per pass", [[i] for i in range(len(images))]),
                           (f"{together} {len(images)}", [list(range(len(images)))])]:
        counter.counts.clear()
        with labelled_phases(owner, phases, counter.phase), counter:
            for batch in batches:
                run(batch)
        per_image = {phase: round(n / len(images)) for phase, n in counter.counts.items()}
        print(f"{label}: {sum(counter.counts.values()) / len(images):.0f} operations per image; by phase {per_image}")


if __name__ == "__main__":
    main()
