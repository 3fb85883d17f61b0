"""Dataset presets (``data/presets/NAME.json``) and custom class lists.

A preset holds the target classes, the background words and the per-dataset constants of
both stages (layer ranges relative to depth, relative thresholds, CLIP-ES name variants).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from tagclip_cls.formats.splits import label_token, read_lines
from tagclip_cls.runtime.resources import data_file
from tagclip_cls.runtime.errors import UserError

PRESET_FOLDER = "presets"  # data/presets/NAME.json, read through tagclip_cls.runtime.resources
MAX_CLASS_NAME_CHARS = 200
COMMENT = "#"  # starts a comment line in a class file


LABEL_SPACES = ("background+classes", "coarse27")


@dataclass(frozen=True)
class ClipEsSettings:
    """Stage 2's per-dataset constants (the published CLIP-ES scripts')."""

    cam_names: tuple[str, ...]  # one prompt name per class (CLIP-ES's richer names)
    background_words: tuple[str, ...]  # extra softmax classes
    affinity_layers: tuple[int | None, int | None] = (-8, -1)  # python-slice bounds over the L layers
    box_threshold: float = 0.4
    label_space: str = "background+classes"  # or "coarse27" (COCO-Stuff: no background, 27 coarse ids)
    class_to_coarse27: tuple[int, ...] = ()  # coarse27: class index -> coarse id
    png_value_to_class: tuple[int, ...] = ()  # COCO-Stuff ground-truth PNG value -> class index (255: none)
    coarse27_names: tuple[str, ...] = ()  # coarse27: the coarse classes' names, id order

    def __post_init__(self) -> None:
        if self.label_space not in LABEL_SPACES:
            raise ValueError(f"unknown label space {self.label_space!r}; one of {LABEL_SPACES}")

    def png_value_lookups(self) -> tuple[np.ndarray, np.ndarray]:
        """Two 256-entry uint8 tables for COCO-Stuff ground-truth PNG values: to the class index
        and to the coarse id (255: no class)."""
        to_class = np.full(256, 255, dtype=np.uint8)
        to_class[:len(self.png_value_to_class)] = self.png_value_to_class
        to_coarse = np.full(256, 255, dtype=np.uint8)
        known = to_class != 255
        to_coarse[known] = np.asarray(self.class_to_coarse27, dtype=np.uint8)[to_class[known]]
        return to_class, to_coarse


@dataclass(frozen=True)
class Preset:
    name: str
    classes: tuple[str, ...]
    background_words: tuple[str, ...] = ()
    dmar_layers: tuple[int, int] = (-4, -1)  # python-slice bounds over the L layers
    cwr_ratio: float = 0.5
    tag_ratio: float = 0.5
    clip_es: ClipEsSettings | None = None  # None: the classes and background words, VOC constants

    def __post_init__(self) -> None:
        if self.clip_es is None:
            object.__setattr__(self, "clip_es", ClipEsSettings(self.classes, self.background_words))

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def available_presets() -> list[str]:
    """Names of the shipped presets (``data/presets/*.json``)."""
    return sorted(p.name.removesuffix(".json") for p in data_file(PRESET_FOLDER).iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> Preset:
    """Load a named preset such as ``voc2007`` or ``cocostuff``."""
    path = data_file(PRESET_FOLDER, f"{name}.json")
    if not path.is_file():
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(available_presets())}")
    raw = json.loads(path.read_text(encoding="utf-8"))
    tc = raw["tagclip"]
    clip_es = {k: tuple(v) if isinstance(v, list) else v for k, v in raw["clip_es"].items()}
    return Preset(name=raw["name"], classes=tuple(raw["classes"]),
                  background_words=tuple(raw["background_words"]),
                  dmar_layers=tuple(tc["dmar_layers"]), cwr_ratio=tc["cwr_ratio"],
                  tag_ratio=tc["tag_ratio"], clip_es=ClipEsSettings(**clip_es))


ClassesInput = Union[Sequence[str], str, os.PathLike]  # names, or a class file


def check_class_names(names: Sequence[str], where: Callable[[int], str]) -> tuple[str, ...]:
    """Names with runs of whitespace collapsed, checked: none empty, too long, holding ``#`` (a
    class file could not hold it), or the same as another once spaces are written as ``_`` (as
    ``tags.txt`` writes them). ``where(i)`` names the place of the ``i``-th name in errors."""
    seen: dict[str, str] = {}
    out = []
    for index, raw in enumerate(names):
        name = " ".join(str(raw).split())
        if not name:
            raise UserError(f"{where(index)}: empty class name")
        if COMMENT in name:
            raise UserError(f"{where(index)}: {COMMENT!r} in class name {name!r} (class files take it as a comment "
                            f"only at the start of a line)")
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise UserError(f"{where(index)}: class name longer than {MAX_CLASS_NAME_CHARS} characters")
        token = label_token(name)
        if token in seen:
            what = "duplicate class name" if seen[token] == name else f"class name clashes with {seen[token]!r}"
            raise UserError(f"{where(index)}: {what} {name!r} (names are written with '_' for spaces)")
        seen[token] = name
        out.append(name)
    return tuple(out)


def read_class_file(path: str | os.PathLike) -> tuple[str, ...]:
    """Read one class name per line; blank lines and comment lines (``#`` first) are ignored. A
    ``#`` after a name is refused (:func:`check_class_names`) rather than cutting the name there."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class list not found")
    numbered = [(lineno, line) for lineno, line in enumerate(read_lines(path), 1)
                if line.strip() and not line.lstrip().startswith(COMMENT)]
    if not numbered:
        raise UserError(f"{path}: class list is empty")
    return check_class_names([text for _, text in numbered], lambda i: f"{path}:{numbered[i][0]}")


def make_preset(dataset: str | None = None, classes: ClassesInput | None = None,
                background: ClassesInput | None = None) -> Preset:
    """A named preset, or one for the user's own classes (names or a class file) and background
    words, with the VOC-style constants of the paper."""
    if dataset:
        if classes is not None or background is not None:
            raise UserError("background words go with your own classes; a preset (--dataset) has its own")
        return load_preset(dataset)
    if classes is None:
        raise UserError("pass --dataset NAME or --classes FILE (Python: preset=NAME or classes=[...])")
    names = _class_names(classes, "classes")
    words = _class_names(background, "background") if background is not None else ()
    clash = sorted(set(names) & set(words))
    if clash:
        raise UserError(f"{background if isinstance(background, (str, os.PathLike)) else 'background'}: "
                        f"background words also listed as classes: {clash}")
    name = Path(classes).stem if isinstance(classes, (str, os.PathLike)) else "custom"
    return Preset(name=name, classes=names, background_words=words)


def _class_names(value: ClassesInput, what: str) -> tuple[str, ...]:
    if isinstance(value, (str, os.PathLike)):
        return read_class_file(value)
    names = check_class_names(list(value), lambda i: f"{what}[{i}]")
    if not names:
        raise UserError(f"{what}: empty class list")
    return names


def coarse27_names(preset: Preset | None = None) -> tuple[str, ...]:
    """Names of the 27 COCO-Stuff coarse classes (label ids 0..26, in order), the one copy being
    ``clip_es.coarse27_names`` of ``preset`` (default: the ``cocostuff`` preset).

    Spelled as COCO-Stuff's own supercategories: the thing groups ``food`` / ``furniture`` and the
    stuff groups ``food-stuff`` / ``furniture-stuff``.
    """
    preset = preset if preset is not None else load_preset("cocostuff")
    names = preset.clip_es.coarse27_names
    if not names:
        raise UserError(f"preset {preset.name}: no clip_es.coarse27_names (its label space is "
                        f"{preset.clip_es.label_space!r}, not coarse27)")
    if len(names) != 27 or len(set(names)) != len(names):
        raise UserError(f"preset {preset.name}: clip_es.coarse27_names must hold 27 distinct names, got {len(names)}")
    return names
