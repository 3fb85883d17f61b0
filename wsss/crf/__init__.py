"""The fully connected CRF solver (Krähenbühl and Koltun) as stage 2 uses it, with two backends.
The label maps it refines, its settings object and the ``masks_crf/`` files: :mod:`wsss.masks.crf`.

* ``pydensecrf``: the published C++ code (:mod:`.pydensecrf_backend`), one CPU core per call;
* ``torch``: :mod:`.permutohedral`, the same model and lattice in PyTorch, on CPU or CUDA, for
  one image or many at once; Q agrees with pydensecrf's to about 1e-8 on photographs.

``image`` is the ``H x W x 3`` uint8 colour input of the bilateral kernel (:func:`bilateral_image`
makes it from a picture, as published or plainly) and ``prob`` the
``R x H x W`` probability stack (unary ``-log(max(prob, 1e-5))``); both backends return the
mean-field Q as an ``R x H x W`` float32 array. The backends load on first use.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from wsss.crf.image import CRF_IMAGE_MODES, bilateral_image
from wsss.crf.params import CRFParams

__all__ = ["CRF_BACKENDS", "CRF_IMAGE_MODES", "CRFParams", "bilateral_image", "default_backend", "dense_crf",
           "dense_crf_batch"]

CRF_BACKENDS = ("pydensecrf", "torch")


def default_backend(device: str | None) -> str:
    """``torch`` next to a GPU, ``pydensecrf`` on a CPU (where it is as fast and is the reference)."""
    return "torch" if device is not None and str(device).startswith("cuda") else "pydensecrf"


def dense_crf(image: np.ndarray, prob: np.ndarray, params: CRFParams = CRFParams(), *,
              backend: str = "pydensecrf", device: str | None = None) -> np.ndarray:
    """Mean-field Q (``R x H x W`` float32) of ``prob`` on ``image`` (see the module docstring);
    ``device`` is for the torch backend (default cpu)."""
    return dense_crf_batch([image], [prob], params, backend=backend, device=device)[0]


def dense_crf_batch(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], params: CRFParams = CRFParams(),
                    *, backend: str = "pydensecrf", device: str | None = None) -> list[np.ndarray]:
    """:func:`dense_crf` of many images (sizes and label counts may differ): the torch backend
    runs them through one lattice, pydensecrf one after the other. Each backend checks its inputs."""
    if backend == "torch":
        from wsss.crf.permutohedral import dense_crf_torch_batch

        return dense_crf_torch_batch(list(images), list(probs), params, device or "cpu")
    if backend == "pydensecrf":
        from wsss.crf.pydensecrf_backend import dense_crf_pydensecrf

        if len(images) != len(probs):
            raise ValueError(f"{len(images)} images but {len(probs)} probability stacks")
        return [dense_crf_pydensecrf(image, prob, params) for image, prob in zip(images, probs)]
    raise ValueError(f"unknown CRF backend {backend!r}; choose one of {', '.join(CRF_BACKENDS)}")
