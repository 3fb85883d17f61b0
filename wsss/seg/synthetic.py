"""A synthetic shapes dataset in the VOC layout, for tests and CPU smoke runs of stage 3.

Each image shows one to three coloured shapes on a noisy background: class 1 (aeroplane)
is a red disc, class 2 (bicycle) a green square, class 3 (bird) a blue triangle. The ground
truth is exact; the pseudo masks are the ground truth with stage-2-like noise (shifted or
missing regions, wrong-class patches, ignored pixels).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tagclip_cls.formats.mask_png import IGNORE, write_label_png
from tagclip_cls.runtime.atomic_io import atomic_write, write_text_atomic

CLASS_COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 70, 230)}


def _draw_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    img = rng.normal(128, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(1, 4))
        r = int(rng.integers(size // 8, size // 4))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        box = (cx - r, cy - r, cx + r, cy + r)
        if cls == 1:
            draw.ellipse(box, fill=cls)
        elif cls == 2:
            draw.rectangle(box, fill=cls)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=cls)
    mask = np.asarray(mask_img, dtype=np.uint8).copy()
    for cls, colour in CLASS_COLOURS.items():
        sel = mask == cls
        img[sel] = (np.asarray(colour) + rng.normal(0, 15, (sel.sum(), 3))).clip(0, 255)
    return img, mask


def _corrupt(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Stage-2-like noise: a shifted mask, a wrong-class patch and an ignored patch."""
    size = mask.shape[0]
    dy, dx = rng.integers(-2, 3, 2)
    noisy = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
    for value in (int(rng.integers(0, 4)), IGNORE):
        h, w = (int(v) for v in rng.integers(size // 8, size // 4, 2))
        y, x = (int(v) for v in rng.integers(0, size - max(h, w), 2))
        noisy[y:y + h, x:x + w] = value
    return noisy


def write_synthetic_voc(root: str | os.PathLike, *, num_train: int = 48, num_val: int = 16,
                        size: int = 64, seed: int = 0) -> Path:
    """Write the dataset under ``root``: ``JPEGImages``, ``SegmentationClass`` (exact
    ground truth, all images), ``ImageSets/Segmentation/{train_aug,val}.txt`` and
    ``pseudo_masks/`` (noisy masks of the training images). Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    dirs = {k: root / k for k in ("JPEGImages", "SegmentationClass", "pseudo_masks",
                                  "ImageSets/Segmentation")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    splits = {"train_aug": [f"train_{i:04d}" for i in range(num_train)],
              "val": [f"val_{i:04d}" for i in range(num_val)]}
    for split, ids in splits.items():
        for img_id in ids:
            img, mask = _draw_sample(rng, size)
            atomic_write(dirs["JPEGImages"] / f"{img_id}.jpg",
                         lambda f, img=img: Image.fromarray(img).save(f, format="JPEG", quality=95), "wb", root)
            write_label_png(dirs["SegmentationClass"] / f"{img_id}.png", mask, root)
            if split == "train_aug":
                write_label_png(dirs["pseudo_masks"] / f"{img_id}.png", _corrupt(rng, mask), root)
        write_text_atomic(dirs["ImageSets/Segmentation"] / f"{split}.txt", "\n".join(ids) + "\n", root)
    return root
