"""Stage 1 from Python: :class:`Tagger` turns images into multi-label tags.

>>> tagger = Tagger.from_pretrained("openai", preset="voc2007")       # doctest: +SKIP
>>> result = tagger("photo.jpg")                                      # doctest: +SKIP
>>> result.names, result.scores                                       # doctest: +SKIP

``tools/gen_tags.py`` is a loop over :meth:`Tagger.tag_batch` plus file I/O, so the API and the
tool give the same numbers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence, overload

import numpy as np
import torch

from tagclip_cls.core.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageInput, PreparedImage, prepare_image
from tagclip_cls.core.models import LoadedClip, load_clip
from tagclip_cls.core.presets import ClassesInput, Preset, make_preset
from tagclip_cls.core.text import load_templates, text_embeddings
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.precision import check_precision
from tagclip_cls.tagging import METHODS
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig, global_clip_scores, select_tags



@dataclass(frozen=True)
class TagResult:
    """Tags of one image."""

    tags: tuple[int, ...]  # class indices, ascending
    names: tuple[str, ...]  # their class names
    scores: np.ndarray = field(repr=False)  # the K final class scores, class order


def tag_config(preset: Preset, method: str = "tagclip", precision: str = "fp32",
               round_fp16_pos: bool = True, attention: str = "exact") -> TagConfig:
    """The method switches of ``method`` with the preset's constants."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return TagConfig(dmar=method in ("tagclip", "dmar"), cwr=method == "tagclip",
                     dmar_layers=preset.dmar_layers, cwr_ratio=preset.cwr_ratio, tag_ratio=preset.tag_ratio,
                     round_fp16_pos=round_fp16_pos, precision=precision, attention=attention)


class Tagger:
    """TagCLIP (or one of its ablations) for one class list, ready to tag images.

    Build it with :meth:`from_pretrained`, or from an already loaded CLIP (:func:`load_clip`).
    Calling it on an image (path, PIL image or ``H x W x 3`` uint8 array) returns a
    :class:`TagResult`; on a list, a list.
    """

    def __init__(self, clip: LoadedClip, preset: Preset, *, method: str = "tagclip", precision: str = "fp32",
                 max_side: int | None = DEFAULT_MAX_SIDE, round_fp16_pos: bool = True,
                 cache_dir: str | os.PathLike | None = None, attention: str = "exact",
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.clip = clip
        self.preset = preset
        self.method = method
        self.max_side = max_side
        self.max_pixels = max_pixels  # image files with more pixels are refused from their header
        self.cache_dir = cache_dir
        check_precision(precision, clip.device.type)
        text = text_embeddings(clip, preset.classes + preset.background_words, load_templates(), cache_dir)
        self.model = TagCLIP(clip, text, preset.num_classes, tag_config(preset, method, precision, round_fp16_pos,
                                                                                attention))

    @classmethod
    def from_pretrained(cls, pretrained: str = "openai", model: str | None = None, *, preset: str | None = None,
                        classes: ClassesInput | None = None, background: ClassesInput | None = None,
                        device: str | torch.device = "cpu", precision: str = "fp32", method: str = "tagclip",
                        max_side: int | None = DEFAULT_MAX_SIDE, round_fp16_pos: bool = True,
                        cache_dir: str | os.PathLike | None = None, attention: str = "exact",
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> "Tagger":
        """Load CLIP and encode the class texts (cached on disk).

        ``pretrained``: an open_clip tag such as ``"openai"`` or a checkpoint path; ``model``: the
        open_clip architecture (``None``: ``ViT-B-16`` for a tag, and for a path an OpenAI
        checkpoint whose architecture is read from the file), as ``--model`` in the tools.
        Classes come from ``preset`` (``voc2007``, ``coco2014``, ...) or from ``classes`` and
        ``background`` (lists of names or class files). ``attention``: ``"fused"`` runs the CWR
        crops through ``scaled_dot_product_attention`` (as ``--attention``).
        """
        chosen = make_preset(preset, classes, background)  # before the (slow) load: errors come at once
        return cls(load_clip(model, pretrained, device), chosen, method=method, precision=precision,
                   max_side=max_side, round_fp16_pos=round_fp16_pos, cache_dir=cache_dir, attention=attention,
                   max_pixels=max_pixels)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.preset.classes

    def prepare(self, image: ImageInput) -> PreparedImage:
        """Decode and preprocess one image as the tools do (``max_side`` and ``max_pixels`` applied)."""
        return prepare_image(image, self.clip.patch_size, self.max_side, self.max_pixels)

    def tag_batch(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[TagResult]:
        """Tag preprocessed images: a ``B x 3 x H x W`` batch, or ``3 x H x W`` tensors of any
        sizes (computed in one padded pass, see :meth:`TagCLIP.score`)."""
        if self.method == "global":
            probs = global_clip_scores(self.clip, self.model.text, images, self.model.num_targets,
                                       self.model.config.precision)
            scored = [(p, select_tags(p, self.model.config.tag_ratio)) for p in probs]
        else:
            scored = [(r.scores, r.tags) for r in self.model.score(images)]
        return [TagResult(tuple(tags), tuple(self.class_names[t] for t in tags), np.asarray(scores))
                for scores, tags in scored]

    @overload
    def __call__(self, images: ImageInput) -> TagResult: ...
    @overload
    def __call__(self, images: list[ImageInput]) -> list[TagResult]: ...

    def __call__(self, images):
        """Tag one image, or each image of a list (one at a time: sizes may differ)."""
        if isinstance(images, (list, tuple)):
            return [self(image) for image in images]
        return self.tag_batch(self.prepare(images).tensor[None])[0]
