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
from typing import Any, Sequence, overload

import numpy as np
import torch

from tagclip_cls.core.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageInput, PreparedImage, prepare_image
from tagclip_cls.core.models import LoadedClip, load_clip
from tagclip_cls.core.presets import ClassesInput, Preset, make_preset
from tagclip_cls.core.text import load_templates, text_embeddings
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.choices import ClipChoices, Runtime
from tagclip_cls.tagging import METHODS
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig, global_clip_scores, select_tags



@dataclass(frozen=True)
class TagResult:
    """Tags of one image."""

    tags: tuple[int, ...]  # class indices, ascending
    names: tuple[str, ...]  # their class names
    scores: np.ndarray = field(repr=False)  # the K final class scores, class order


@dataclass(frozen=True)
class TagOptions:
    """Stage 1's options, resolved (:meth:`TagChoices.resolve`): every value concrete."""

    method: str = "tagclip"  # model: tagging.METHODS
    round_fp16_pos: bool = True  # model: the positional table rounded to fp16, as published
    max_side: int | None = DEFAULT_MAX_SIDE  # images: longer sides scaled down to this
    max_pixels: int = DEFAULT_MAX_PIXELS  # images: files of more pixels refused from their header
    runtime: Runtime = Runtime()


@dataclass
class TagChoices(ClipChoices):
    """Stage 1's options as a caller gives them, ``None`` meaning the device's default: the one
    set of defaults of :meth:`Tagger.from_pretrained`, ``tools/gen_tags.py`` and the pipeline."""

    method: str = "tagclip"

    def resolve(self) -> TagOptions:
        """The concrete options for :attr:`device`; a bad choice is a :class:`UserError`."""
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        return TagOptions(method=self.method, round_fp16_pos=not self.no_fp16_pos, max_side=self.max_side,
                          max_pixels=self.max_pixels, runtime=self.runtime())


def tag_config(preset: Preset, options: TagOptions = TagOptions()) -> TagConfig:
    """The method switches of ``options.method`` with the preset's constants."""
    return TagConfig(dmar=options.method in ("tagclip", "dmar"), cwr=options.method == "tagclip",
                     dmar_layers=preset.dmar_layers, cwr_ratio=preset.cwr_ratio, tag_ratio=preset.tag_ratio,
                     round_fp16_pos=options.round_fp16_pos, precision=options.runtime.precision,
                     attention=options.runtime.attention)


class Tagger:
    """TagCLIP (or one of its ablations) for one class list, ready to tag images.

    Build it with :meth:`from_pretrained`, or from an already loaded CLIP (:func:`load_clip`).
    Calling it on an image (path, PIL image or ``H x W x 3`` uint8 array) returns a
    :class:`TagResult`; on a list, a list.
    """

    def __init__(self, clip: LoadedClip, preset: Preset, options: TagOptions | None = None, *,
                 cache_dir: str | os.PathLike | None = None, **choices: Any):
        """``options``: resolved ones; else ``choices`` (fields of :class:`TagChoices`) are
        resolved for the CLIP's device."""
        if options is not None and choices:
            raise TypeError("pass resolved options or choices, not both")
        options = options or TagChoices(device=str(clip.device), **choices).resolve()
        self.clip = clip
        self.preset = preset
        self.options = options
        self.cache_dir = cache_dir
        text = text_embeddings(clip, preset.classes + preset.background_words, load_templates(), cache_dir)
        self.model = TagCLIP(clip, text, preset.num_classes, tag_config(preset, options))

    @classmethod
    def from_pretrained(cls, pretrained: str = "openai", model: str | None = None, *, preset: str | None = None,
                        classes: ClassesInput | None = None, background: ClassesInput | None = None,
                        device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                        **choices: Any) -> "Tagger":
        """Load CLIP and encode the class texts (cached on disk).

        ``pretrained``: an open_clip tag such as ``"openai"`` or a checkpoint path; ``model``: the
        open_clip architecture (``None``: ``ViT-B-16`` for a tag, and for a path an OpenAI
        checkpoint whose architecture is read from the file), as ``--model`` in the tools.
        Classes come from ``preset`` (``voc2007``, ``coco2014``, ...) or from ``classes`` and
        ``background`` (lists of names or class files). ``choices``: the fields of
        :class:`TagChoices` (``precision``, ``method``, ``attention``, ``max_side``, ...),
        resolved for ``device`` as ``tools/gen_tags.py`` resolves its flags.
        """
        chosen = make_preset(preset, classes, background)  # before the (slow) load: errors come at once
        options = TagChoices(device=str(device), **choices).resolve()
        return cls(load_clip(model, pretrained, device), chosen, options, cache_dir=cache_dir)

    @property
    def method(self) -> str:
        return self.options.method

    @property
    def max_side(self) -> int | None:
        return self.options.max_side

    @property
    def max_pixels(self) -> int:
        return self.options.max_pixels

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
