"""The colour input of the CRF's bilateral kernel, as the published code prepares it or plainly.

* ``published``: the BGR image minus the Caffe mean (104.008, 116.669, 122.675) cast to uint8,
  what both published CRFs see: CLIP-ES's pseudo masks (stage 2) and deeplab-pytorch's test of
  the trained DeepLab-v2 (stage 3: its dataset subtracts the mean and ``main.py crf`` casts the
  result with ``astype(np.uint8)``). Negative values wrap: on x86-64 numpy's float -> uint8
  ``astype`` truncates toward zero and keeps the low 8 bits, i.e. ``trunc(x) mod 256`` (-0.5 -> 0,
  -1.7 -> 255, -104.008 -> 152). C leaves that cast undefined (ARM saturates to 0), so it is
  computed here with integer arithmetic, the same on every platform and equal to what the
  published results were made with.
* ``rgb``: the plain RGB uint8 image (the corrected behaviour).
"""
from __future__ import annotations

import numpy as np

CRF_IMAGE_MODES = ("published", "rgb")
PUBLISHED_BGR_MEAN = (104.008, 116.669, 122.675)


def bilateral_image(rgb: np.ndarray, mode: str = "published") -> np.ndarray:
    """The ``H x W x 3`` C-contiguous uint8 image the bilateral kernel sees (see module doc)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    if mode == "rgb":
        return np.ascontiguousarray(rgb)
    if mode == "published":
        shifted = rgb[..., ::-1].astype(np.float64) - np.asarray(PUBLISHED_BGR_MEAN)
        return np.ascontiguousarray(np.mod(np.trunc(shifted).astype(np.int64), 256).astype(np.uint8))
    raise ValueError(f"unknown CRF image mode {mode!r}; choose one of {', '.join(CRF_IMAGE_MODES)}")
