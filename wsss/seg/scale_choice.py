"""DeepLab-v2's training-time rescaling (deeplab-pytorch ``libs/datasets/base.py``): one factor
drawn uniformly from a fixed list, the image resized bilinearly to ``int(side * factor)`` and the
label map by PIL's nearest neighbour (:func:`nearest_label`)."""
from __future__ import annotations

import random
from typing import Sequence

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS
from PIL import Image


def nearest_label(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A label map (values 0..255) resized to ``size_hw`` by PIL's ``NEAREST``, with which
    deeplab-pytorch resizes labels (``libs/datasets/base.py``, ``main.py`` ``resize_labels``:
    OpenCV's and torch's nearest pick other pixels)."""
    height, width = size_hw
    return np.asarray(Image.fromarray(label.astype(np.uint8)).resize((width, height), resample=Image.NEAREST))


@TRANSFORMS.register_module()
class RandomScaleChoice(BaseTransform):
    """Rescale ``img`` and ``gt_seg_map`` by a factor drawn from ``scales``.

    Args:
        scales: the factors to draw from, each equally likely.
    """

    def __init__(self, scales: Sequence[float]) -> None:
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"RandomScaleChoice needs positive scales, got {scales!r}")
        self.scales = tuple(float(s) for s in scales)

    def transform(self, results: dict) -> dict:
        """Resize the image and its label map (if any) by one drawn factor."""
        factor = random.choice(self.scales)
        h, w = results["img"].shape[:2]
        size = (int(w * factor), int(h * factor))
        results["img"] = mmcv.imresize(results["img"], size, interpolation="bilinear")
        if results.get("gt_seg_map") is not None:
            results["gt_seg_map"] = nearest_label(results["gt_seg_map"], size[::-1])
        results["img_shape"] = results["img"].shape[:2]
        results["scale_factor"] = (size[0] / w, size[1] / h)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scales={self.scales})"
