#!/usr/bin/env python
"""The host's share of each image in stages 1 and 2: what a GPU waits on if the CPU falls behind.

On ``bench_pipeline.py``'s synthetic JPEGs (VOC's size mix), with CLIP's patch of 16:

* **read**: what the reader threads do per image, :func:`~tagclip_cls.core.images.prepare_image`
  (decode, bicubic resize to the model's input, normalise), and with ``--crf-backend torch`` the
  RGB copy for the CRF as well;
* **write**: what stage 2's writer threads do per image,
  :func:`wsss.masks.run.write_image_outputs` (CAM file, label map, label PNG), for float16 CAMs of
  the image's size (1-3 tags as ``bench_pipeline.py`` draws them; smooth maps, bilinear from the
  patch grid as stage 2 makes them), without and with a CRF mask PNG.

Each job runs over all images in a pool of 1..``--threads`` threads; the figures are images/s,
so ``goal / rate`` is the number of such threads a stage needs to feed the GPU at ``goal``
images/s (on cores like these). Not a test.

    python benchmarks/bench_host.py [--images 64] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_pipeline import machine_name, random_tags, write_images  # noqa: E402
from tagclip_cls.core.images import PreparedImage, as_pil, load_rgb, prepare_image  # noqa: E402
from tagclip_cls.core.presets import make_preset  # noqa: E402
from tagclip_cls.formats.mask_folder import MaskFolder  # noqa: E402
from wsss.masks.cams import resize_maps  # noqa: E402
from wsss.masks.label_maps import LabelSpace  # noqa: E402
from wsss.masks.run import write_image_outputs  # noqa: E402

PATCH = 16


def stage2_outputs(sizes: list[tuple[int, int]], seed: int) -> list[tuple[list[int], np.ndarray]]:
    """Tags (:func:`bench_pipeline.random_tags`) and float16 CAMs ``K x H x W`` per image: random
    patch-grid maps resized bilinearly."""
    rng = np.random.default_rng(seed)
    outputs = []
    for (height, width), tags in zip(sizes, random_tags(len(sizes), seed)):
        grid = rng.random((len(tags), -(-height // PATCH), -(-width // PATCH))).astype(np.float32)
        outputs.append((tags, resize_maps(grid, (height, width)).astype(np.float16)))
    return outputs


def read_with_rgb(path: Path) -> tuple[PreparedImage, np.ndarray]:
    """Stage 2's reading with the inline CRF: one decoding for the model's input and the RGB copy."""
    image = as_pil(path)
    return prepare_image(image, PATCH, 1024), load_rgb(image)


def rate(job: Callable[[int], object], count: int, threads: int) -> float:
    """Images/s of ``job(i)`` for ``i < count`` in a pool of ``threads`` (after one warm-up call)."""
    job(0)
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(job, range(count)))
        return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="largest pool timed")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)  # as in a reader thread: one image per thread
    space = LabelSpace.from_preset(make_preset("voc2012"))
    with tempfile.TemporaryDirectory() as work:
        items = write_images(Path(work) / "images", args.images, args.seed)
        paths = [Path(work) / "images" / f"{image_id}.jpg" for image_id, _ in items]
        outputs = stage2_outputs([size for _, size in items], args.seed)
        crf_labels = [np.zeros(size, np.uint8) for _, size in items]
        for index, (_, size) in enumerate(items):  # a CRF mask of the same kind as the label map
            crf_labels[index][size[0] // 4: size[0] // 2, size[1] // 3: 2 * size[1] // 3] = outputs[index][0][0] + 1
        layout = MaskFolder(Path(work) / "out")

        def write(i: int, with_crf: bool = False) -> None:
            tags, cams = outputs[i]
            write_image_outputs(space, layout, items[i][0], tags, cams, crf_labels[i] if with_crf else None)

        jobs = {
            "read: prepare_image": lambda i: prepare_image(paths[i], PATCH, 1024),
            "read + RGB copy (inline CRF)": lambda i: read_with_rgb(paths[i]),
            "write: CAM file, label map, PNG": write,
            "write + CRF mask PNG": lambda i: write(i, True),
        }
        pools = list(range(1, args.threads + 1))
        table = {name: [rate(job, len(items), n) for n in pools] for name, job in jobs.items()}
    print(f"- {machine_name(torch.device('cpu'))}, {len(items)} images, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print()
    print("| job | ms per image, 1 thread | " + " | ".join(f"images/s, {n} thread{'s' * (n > 1)}" for n in pools) + " |")
    print("|---|---|" + "---|" * len(pools))
    for name, rates in table.items():
        print(f"| {name} | {1000 / rates[0]:.1f} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
