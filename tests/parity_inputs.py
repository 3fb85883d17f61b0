"""Seeded inputs of the parity fixtures, rebuilt identically by ``scripts/make_parity_fixtures.py``
(which runs the published code on them) and by ``tests/test_parity.py`` (which runs this project).

Weights: tiny 12-layer CLIPs in OpenAI's layout (vision width 128, 2 heads; text width 64, 2
layers; embed 64) with float32 values that are not fp16-valued, logit scale 100 (``exp(4.6052)``,
as OpenAI's) or 14.3 (``1 / 0.07``, open_clip's initial value), and one whose floating tensors are
rounded to fp16 values (as OpenAI's released weights are). Images: odd sizes, one grey, stored
losslessly (PNG data; the published code wants ``ID.jpg`` names and PIL reads the content).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tagclip_cls.core.random_weights import random_openai_state_dict

TINY = dict(vision_width=128, vision_layers=12, text_width=64, text_layers=2, embed_dim=64)
#: name -> (seed, logit-scale parameter, round to fp16 values)
WEIGHTS = {
    "tiny_f32_s0_scale100": (0, 4.6052, False),
    "tiny_f32_s1_scale14": (1, math.log(1 / 0.07), False),
    "tiny_fp16_s2_scale100": (2, 4.6052, True),
}
#: id -> (height, width, PIL mode)
IMAGES = {"a_wide": (37, 53, "RGB"), "b_grey": (61, 45, "L"), "c_big": (70, 90, "RGB"), "d_square": (48, 48, "RGB"),
          "e_strip": (33, 100, "RGB")}
STAGE1_PRESETS = ("voc2007", "coco2014", "cocostuff")
#: not made: with COCO-Stuff's relative threshold of 0.1 and a flat softmax (logit scale 14.3)
#: nearly all 171 classes go through CWR, one forward each in the published code: about 8 minutes
#: per image on 2 cores
STAGE1_SKIPPED = {("tiny_f32_s1_scale14", "cocostuff")}
#: stage 2: preset -> the tags of each image (class indices of that preset)
STAGE2_TAGS = {
    "voc2012": {"a_wide": [7, 14], "b_grey": [11], "c_big": [2, 7, 14], "d_square": [19], "e_strip": [0, 6]},
    "coco2014": {"a_wide": [0, 15], "b_grey": [16], "c_big": [0, 2, 56], "d_square": [62], "e_strip": [2, 4]},
    "cocostuff": {"a_wide": [0, 112], "b_grey": [16, 150], "c_big": [0, 2, 56], "d_square": [62, 123],
                  "e_strip": [4, 100]},
}


def state_dict(name: str) -> dict[str, torch.Tensor]:
    """The weights called ``name`` in :data:`WEIGHTS`."""
    seed, logit, fp16 = WEIGHTS[name]
    weights = random_openai_state_dict(**TINY, seed=seed)
    weights["logit_scale"] = torch.tensor(logit, dtype=torch.float32)
    if fp16:
        weights = {k: v.half().float() if v.is_floating_point() else v for k, v in weights.items()}
    return weights


def write_weights(name: str, folder: Path) -> Path:
    path = Path(folder) / f"{name}.pt"
    torch.save(state_dict(name), path)
    return path


def image(image_id: str) -> Image.Image:
    """A seeded noisy picture with two coloured rectangles and a horizontal gradient."""
    height, width, mode = IMAGES[image_id]
    rng = np.random.default_rng(sorted(IMAGES).index(image_id) + 1)
    arr = rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
    arr[height // 4: height // 2, width // 3: 2 * width // 3] = (230, 40, 40)
    arr[int(height * 0.6): int(height * 0.9), width // 10: width // 3] = (30, 200, 60)
    arr[:, :, 2] = np.clip(arr[:, :, 2].astype(np.int32) + np.linspace(0, 100, width)[None, :].astype(np.int32),
                           0, 255).astype(np.uint8)
    return Image.fromarray(arr).convert(mode)


def write_images(folder: Path) -> Path:
    """Every image as ``folder/ID.jpg`` holding PNG data (lossless); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in IMAGES:
        image(image_id).save(folder / f"{image_id}.jpg", format="PNG")
    return folder
