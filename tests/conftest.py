"""Shared fixtures: a small randomly initialised 12-layer CLIP and synthetic images."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from tagclip_cls.core.models import LoadedClip, load_clip
from tagclip_cls.core.random_weights import random_openai_state_dict

TINY = dict(vision_width=128, vision_layers=12, text_width=64, text_layers=2, embed_dim=64)


@pytest.fixture(scope="session")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    return random_openai_state_dict(**TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_state_dict) -> str:
    path = tmp_path_factory.mktemp("weights") / "tiny_openai.pt"
    torch.save(tiny_state_dict, path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_clip(tiny_checkpoint) -> LoadedClip:
    return load_clip(None, tiny_checkpoint)


def write_image(path, size_hw, mode="RGB", seed=0):
    """A noisy image with a bright rectangle, saved in ``mode``."""
    rng = np.random.default_rng(seed)
    h, w = size_hw
    arr = rng.integers(0, 120, (h, w, 3), dtype=np.uint8)
    arr[h // 4: h // 2, w // 3: 2 * w // 3] = (230, 40, 40)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


@pytest.fixture()
def image_folder(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    write_image(root / "a_grey.png", (70, 90), "L", seed=1)
    write_image(root / "b_rgba.png", (83, 61), "RGBA", seed=2)
    write_image(root / "c_rgb.jpg", (64, 100), "RGB", seed=3)
    write_image(root / "d_same.jpg", (64, 100), "RGB", seed=4)
    return root


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI (``CI`` set) a skipped test is a failure: CI has every dependency, so a skip there
    means a test silently stopped running (e.g. an ``importorskip`` whose module broke)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"unexpected skip under CI: {report.longrepr}"
