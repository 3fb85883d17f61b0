"""Stage 2 from Python: :class:`MaskGenerator` turns an image and its tags into CAMs and masks.

>>> masks = MaskGenerator.from_pretrained("ViT-B-16.pt", preset="voc2012")   # doctest: +SKIP
>>> out = masks("photo.jpg", tags=["cat", "person"])                          # doctest: +SKIP
>>> out.label_map, out.crf()                                                   # doctest: +SKIP

``tools/gen_pseudo_masks.py`` is a loop over :meth:`MaskGenerator.cams` plus file I/O. Label
maps are made from the CAMs rounded to float16, as ``cams/ID.npz`` stores them, so
:attr:`MaskResult.label_map` and :meth:`MaskResult.crf` are byte for byte the tool's PNGs.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from tagclip_cls.core.images import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageInput, PreparedImage, as_pil, load_rgb,
                                     prepare_image)
from tagclip_cls.core.models import LoadedClip, load_clip
from tagclip_cls.core.presets import ClassesInput, Preset, make_preset
from tagclip_cls.core.text import text_embeddings
from tagclip_cls.formats.splits import label_token
from tagclip_cls.core.choices import ClipChoices, Runtime
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.numbers import parse_int
from wsss.crf import default_backend
from wsss.masks import GRAD_MODES
from wsss.masks.cams import CAM_TEMPLATE, CamConfig, ClipES
from wsss.masks.crf import CRFSettings, crf_label_map
from wsss.masks.label_maps import LabelSpace, label_map

log = logging.getLogger(__name__)


def cam_config(preset: Preset, box_threshold: float | None = None,
               affinity_layers: tuple[int | None, int | None] | None = None, round_fp16_pos: bool = True,
               precision: str = "fp32", grad_mode: str = "loop", attention: str = "exact") -> CamConfig:
    """The preset's CLIP-ES constants, with overrides where given."""
    box = box_threshold if box_threshold is not None else preset.clip_es.box_threshold
    layers = affinity_layers if affinity_layers is not None else preset.clip_es.affinity_layers
    return CamConfig(affinity_layers=tuple(layers), box_threshold=float(box), round_fp16_pos=round_fp16_pos,
                     precision=precision, grad_mode=grad_mode, attention=attention)


def parse_layer_slice(text: str) -> tuple[int | None, int | None]:
    """``"-8:-1"`` -> ``(-8, -1)``, ``"-8:"`` -> ``(-8, None)`` (python-slice bounds)."""
    parts = [part.strip() for part in text.split(":")]
    bounds = [parse_int(part) if part else None for part in parts]
    if len(parts) != 2 or any(bound is None for bound, part in zip(bounds, parts) if part):
        raise UserError(f"--affinity-layers {text!r}: expected START:END in ASCII digits, e.g. -8:-1 or -8:")
    return bounds[0], bounds[1]


@dataclass(frozen=True)
class MaskOptions:
    """Stage 2's options, resolved (:meth:`MaskChoices.resolve`): every value concrete."""

    cam: CamConfig  # model: the preset's CLIP-ES constants with the overrides, precision and attention
    runtime: Runtime = Runtime()
    crf: CRFSettings = CRFSettings()  # how MaskResult.crf and masks_crf/ refine the label maps
    max_side: int | None = DEFAULT_MAX_SIDE  # images: longer sides scaled down to this
    max_pixels: int = DEFAULT_MAX_PIXELS  # images: files of more pixels refused from their header


@dataclass
class MaskChoices(ClipChoices):
    """Stage 2's options as a caller gives them, ``None`` meaning the device's or the preset's
    default: the one set of defaults of :meth:`MaskGenerator.from_pretrained`,
    ``tools/gen_pseudo_masks.py`` and the pipeline."""

    grad_mode: str = "loop"
    box_threshold: float | None = None  # None: the preset's
    affinity_layers: str | tuple[int | None, int | None] | None = None  # "START:END" or bounds; None: the preset's
    crf_image: str = "published"
    ignore_below: float | None = None
    crf_backend: str | None = None  # None: torch on a GPU, pydensecrf on a CPU

    def resolve(self, preset: Preset) -> MaskOptions:
        """The concrete options for :attr:`device` and ``preset``; a bad choice is a :class:`UserError`."""
        if self.grad_mode not in GRAD_MODES:
            raise UserError(f"--grad-mode {self.grad_mode!r}: choose one of {', '.join(GRAD_MODES)}")
        runtime = self.runtime()
        layers = self.affinity_layers
        if isinstance(layers, str):  # the tool's "START:END"; an empty one means the preset's
            layers = parse_layer_slice(layers) if layers else None
        cam = cam_config(preset, self.box_threshold, layers, not self.no_fp16_pos, runtime.precision, self.grad_mode,
                         runtime.attention)
        crf = CRFSettings(image_mode=self.crf_image, ignore_below=self.ignore_below,
                          backend=self.crf_backend or default_backend(runtime.device), device=runtime.device)
        return MaskOptions(cam=cam, runtime=runtime, crf=crf, max_side=self.max_side, max_pixels=self.max_pixels)


@dataclass
class MaskResult:
    """CAMs and label maps of one image."""

    keys: tuple[int, ...]  # class indices of the tags, in the order given
    cams: np.ndarray = field(repr=False)  # K x H x W float32 in [0, 1], original size
    label_map: np.ndarray = field(repr=False)  # H x W uint8: what masks/ID.png holds
    rgb: np.ndarray = field(repr=False)  # H x W x 3 uint8: the picture the CRF sees
    space: LabelSpace = field(repr=False)
    crf_settings: CRFSettings = CRFSettings()

    @property
    def stored_cams(self) -> np.ndarray:
        """The CAMs as ``cams/ID.npz`` stores them (float16)."""
        return self.cams.astype(np.float16)

    def crf(self, settings: CRFSettings | None = None) -> np.ndarray:
        """The dense-CRF label map (``H x W`` uint8): what ``masks_crf/ID.png`` holds; ``settings``
        (default: the generator's resolved ones) as in :func:`wsss.masks.crf.crf_label_map`."""
        return crf_label_map(self.rgb, self.stored_cams, list(self.keys), self.space, settings or self.crf_settings)


class MaskGenerator:
    """CLIP-ES for one class list: refined CAMs, label maps and CRF masks of tagged images.

    Built from a loaded CLIP, it uses its weights as they are; :meth:`from_pretrained` and
    :meth:`from_tagger` round them to fp16 as the published code does."""

    def __init__(self, clip: LoadedClip, preset: Preset, options: MaskOptions | None = None, *,
                 cache_dir: str | os.PathLike | None = None, **choices: Any):
        """``options``: resolved ones; else ``choices`` (fields of :class:`MaskChoices`) are
        resolved for the CLIP's device and ``preset``."""
        if options is not None and choices:
            raise TypeError("pass resolved options or choices, not both")
        options = options or MaskChoices(device=str(clip.device), **choices).resolve(preset)
        config = options.cam
        if not range(clip.num_layers)[slice(*config.affinity_layers)]:
            raise UserError(f"affinity layers {config.affinity_layers} select none of the {clip.num_layers} layers")
        names = list(preset.clip_es.cam_names)
        background = list(preset.clip_es.background_words)
        if len(names) != preset.num_classes:
            raise UserError(f"preset {preset.name}: {len(names)} CLIP-ES names for {preset.num_classes} classes")
        if not background:
            log.warning("no background words: an image with one tag gets a flat CAM (pass --background FILE)")
        text = text_embeddings(clip, names + background, [CAM_TEMPLATE], cache_dir)
        self.clip = clip
        self.preset = preset
        self.options = options
        self.space = LabelSpace.from_preset(preset)
        self.model = ClipES(clip, text[:len(names)], text[len(names):], config)

    @classmethod
    def from_pretrained(cls, pretrained: str = "openai", model: str | None = None, *, preset: str | None = None,
                        classes: ClassesInput | None = None, background: ClassesInput | None = None,
                        device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
                        **choices: Any) -> "MaskGenerator":
        """Load CLIP (as :meth:`tagclip_cls.Tagger.from_pretrained`) and the CLIP-ES class texts.
        ``choices``: the fields of :class:`MaskChoices` (``precision``, ``attention``,
        ``box_threshold``, ``affinity_layers``, ``crf_backend``, ...), resolved for ``device`` as
        ``tools/gen_pseudo_masks.py`` resolves its flags."""
        chosen = make_preset(preset, classes, background)
        options = MaskChoices(device=str(device), **choices).resolve(chosen)
        return cls(load_clip(model, pretrained, device, fp16_weights=True), chosen, options, cache_dir=cache_dir)

    @classmethod
    def from_tagger(cls, tagger, preset: str | None = None, *, cache_dir: str | os.PathLike | None = None,
                    **choices: Any) -> "MaskGenerator":
        """Share a :class:`tagclip_cls.Tagger`'s loaded CLIP (no second load); its classes unless
        ``preset`` names another preset (e.g. ``voc2012`` after tagging with ``voc2007``).

        Stage 2 uses the weights rounded to fp16, as the published CLIP-ES does (see
        :func:`~tagclip_cls.core.models.load_clip`): the same model for OpenAI's fp16-valued
        weights, an in-memory rounded copy for float32 ones."""
        chosen = make_preset(preset) if preset else tagger.preset
        options = MaskChoices(device=str(tagger.clip.device), **choices).resolve(chosen)
        return cls(tagger.clip.fp16_rounded(), chosen, options, cache_dir=cache_dir or tagger.cache_dir)

    def class_indices(self, tags: Sequence[int | str]) -> list[int]:
        """Class indices of ``tags`` given as indices or as class names (``_`` or spaces)."""
        by_name = {label_token(n): i for i, n in enumerate(self.preset.classes)}
        indices = []
        for tag in tags:
            if isinstance(tag, (int, np.integer)) and not isinstance(tag, bool) and 0 <= tag < self.preset.num_classes:
                indices.append(int(tag))
            elif isinstance(tag, str) and label_token(tag) in by_name:
                indices.append(by_name[label_token(tag)])
            else:
                raise UserError(f"unknown class {tag!r} for preset {self.preset.name}")
        return indices

    def prepare(self, image: ImageInput) -> PreparedImage:
        return prepare_image(image, self.clip.patch_size, self.options.max_side, self.options.max_pixels)

    def cams(self, image: PreparedImage, tags: Sequence[int]) -> np.ndarray:
        """Refined CAMs ``K x H x W`` (float32 in [0, 1], original size) of a prepared image."""
        return self.model(image.tensor, list(tags), image.orig_size)

    def cams_batch(self, images: Sequence[PreparedImage], tags: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """:meth:`cams` for several prepared images in one pass (:meth:`ClipES.batch`), the form a
        GPU runs fastest. Images of different sizes are padded to the longest and masked; the
        CAMs equal one-by-one ones up to float rounding (1e-4 in fp32 on random inputs; bf16 and
        fp16 round a padded pass differently, by up to 1.6e-2 on the tests' tiny CLIP)."""
        return self.model.batch([image.tensor for image in images], [list(t) for t in tags],
                                [image.orig_size for image in images])

    def label_map(self, stored_cams: np.ndarray, tags: Sequence[int]) -> np.ndarray:
        """The label map of float16-stored CAMs, as ``masks/ID.png`` holds it."""
        return label_map(stored_cams, list(tags), self.space)

    def __call__(self, image: ImageInput, tags: Sequence[int | str]) -> MaskResult:
        """CAMs and label maps of one image for its ``tags`` (class indices or names)."""
        keys = self.class_indices(tags)
        picture = as_pil(image, self.options.max_pixels)
        cams = self.cams(self.prepare(picture), keys)
        return MaskResult(keys=tuple(keys), cams=cams, label_map=self.label_map(cams.astype(np.float16), keys),
                          rgb=load_rgb(picture), space=self.space, crf_settings=self.options.crf)
