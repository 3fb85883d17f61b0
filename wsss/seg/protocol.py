"""Test protocols of stage 3: how a trained network's predictions are made for evaluation.

* ``single``: one forward pass at the test pipeline's size (the fast test);
* ``published``: deeplab-pytorch's test, which CLIP-ES reports (``main.py test`` and ``crf``):
  the image at its original size and at 0.5 and 0.75 of it, each scale's logits resized to those
  of the original size and fused by their element-wise maximum (the MSC model in eval mode),
  then the dense CRF (:class:`~wsss.crf.CRFParams`' defaults: 10 iterations, positional
  weight 3 and std 1, bilateral weight 4, xy std 67 and rgb std 3) on the softmax of the fused
  logits at image size, its bilateral kernel fed the image as deeplab-pytorch feeds it (the BGR
  image minus the Caffe mean, cast to uint8: :func:`~wsss.crf.bilateral_image` ``published``).

Every protocol scores each of its stages, named by :attr:`TestProtocol.variants`
(``single_scale``, ``multi_scale``, ``multi_scale_crf``); the last one is its result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wsss.crf import CRFParams, bilateral_image, default_backend, dense_crf
from wsss.seg.errors import SegUserError
from wsss.seg.msc import fuse_max, scaled_logits


@dataclass(frozen=True)
class TestProtocol:
    """Input scales fused by max (1.0 among them) and the CRF applied after them, if any."""

    scales: tuple[float, ...] = (1.0,)
    crf: CRFParams | None = None
    crf_image: str = "published"  # the bilateral kernel's colour input (wsss.crf.CRF_IMAGE_MODES)

    @property
    def variants(self) -> tuple[str, ...]:
        """Names of the predictions this protocol scores, its result last."""
        names = ["single_scale"] + (["multi_scale"] if len(self.scales) > 1 else [])
        if self.crf is not None:
            names.append(f"{names[-1]}_crf")
        return tuple(names)


PROTOCOLS: dict[str, TestProtocol] = {
    "single": TestProtocol(),
    "published": TestProtocol(scales=(0.5, 0.75, 1.0), crf=CRFParams()),
}


def get_protocol(name: str) -> TestProtocol:
    """The protocol called ``name`` in :data:`PROTOCOLS`; a ``SegUserError`` for another name."""
    if name not in PROTOCOLS:
        raise SegUserError(f"unknown test protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def predict_variants(model: Any, inputs: Tensor, protocol: TestProtocol, size: tuple[int, int],
                     image: np.ndarray | None = None) -> dict[str, Tensor]:
    """The ``size`` (``H x W``) label maps (int64) of one image for each of ``protocol.variants``.

    ``inputs`` is the ``1 x 3 x h x w`` normalised network input, ``size`` the original image
    size the labels are scored at and ``image`` the picture at that size as ``H x W x 3`` uint8
    colours, for the CRF."""
    by_scale = {s: scaled_logits(model, inputs, s).float() for s in sorted(set(protocol.scales), reverse=True)}
    if 1.0 not in by_scale:
        raise SegUserError(f"test scales {protocol.scales} must include 1.0 (the original size)")

    def at_image_size(logits: Tensor) -> Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0]

    fused = {"single_scale": at_image_size(by_scale[1.0])}
    if len(by_scale) > 1:
        fused["multi_scale"] = at_image_size(fuse_max([by_scale[1.0]] + [by_scale[s] for s in by_scale if s != 1.0]))
    labels = {name: logits.argmax(0) for name, logits in fused.items()}
    if protocol.crf is not None:
        if image is None or image.shape[:2] != tuple(size) or inputs.shape[-2:] != tuple(size):
            raise SegUserError("the CRF of the test protocol needs the image at the size it is scored "
                               "at: test at the original size (no Resize in the test pipeline)")
        last = list(fused)[-1]
        device = str(inputs.device)
        prob = torch.softmax(fused[last], 0).cpu().numpy()
        q = dense_crf(bilateral_image(image, protocol.crf_image), prob, protocol.crf, backend=default_backend(device),
                      device=device)
        labels[f"{last}_crf"] = torch.from_numpy(q.argmax(0)).to(inputs.device)
    return labels
