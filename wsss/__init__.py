"""Stages 2 and 3 and the applications, on top of :mod:`tagclip_cls`'s core and runtime.

* :mod:`wsss.masks`: stage 2, CLIP-ES CAMs, label maps and the dense-CRF masks; Python entry
  point :class:`MaskGenerator`;
* :mod:`wsss.crf`: the fully connected CRF, in pydensecrf or in PyTorch (CPU or CUDA);
* :mod:`wsss.seg`: stage 3, mmsegmentation training and inference (:class:`wsss.seg.Segmenter`);
* :mod:`wsss.evaluation`: mIoU of label maps and ground-truth preparation;
* :mod:`wsss.apps`: the pipeline, the demo and the HTML report.

Layers: :mod:`wsss.crf` imports nothing of the project; :mod:`wsss.evaluation` only
:mod:`tagclip_cls`'s runtime, formats and core; :mod:`wsss.seg` those, :mod:`wsss.evaluation`
and :mod:`wsss.crf` (the published test's CRF post-processing);
:mod:`wsss.masks` those of :mod:`tagclip_cls` (and its ``cli``) and :mod:`wsss.crf`, never stage 1
(:mod:`tagclip_cls.tagging`: the two stages meet only in the tags file, and stage 1 never imports
stage 2 either); :mod:`wsss.apps` sits on top of everything and nothing below imports it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["MaskGenerator", "MaskResult"]

if TYPE_CHECKING:
    from wsss.masks.api import MaskGenerator, MaskResult


def __getattr__(name: str):
    if name in __all__:  # imported on first use (torch, open_clip)
        from wsss.masks import api
        return getattr(api, name)
    raise AttributeError(f"module 'wsss' has no attribute {name!r}")
