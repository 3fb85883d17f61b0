"""Dataset presets (``data/presets/NAME.json``) and custom class lists.

A preset holds the target classes, the background words and the per-dataset constants of
both stages (layer ranges relative to depth, relative thresholds, CLIP-ES name variants).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

from tagclip_cls.formats.splits import label_token, read_lines
from tagclip_cls.runtime.errors import UserError

PRESET_DIR = Path(__file__).resolve().parents[2] / "data" / "presets"
MAX_CLASS_NAME_CHARS = 200


@dataclass(frozen=True)
class Preset:
    name: str
    classes: tuple[str, ...]
    background_words: tuple[str, ...] = ()
    dmar_layers: tuple[int, int] = (-4, -1)  # python-slice bounds over the L layers
    cwr_ratio: float = 0.5
    tag_ratio: float = 0.5
    clip_es: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Preset:
    """Load a named preset such as ``voc2007`` or ``cocostuff``."""
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(available_presets())}")
    raw = json.loads(path.read_text())
    tc = raw["tagclip"]
    return Preset(name=raw["name"], classes=tuple(raw["classes"]),
                  background_words=tuple(raw["background_words"]),
                  dmar_layers=tuple(tc["dmar_layers"]), cwr_ratio=tc["cwr_ratio"],
                  tag_ratio=tc["tag_ratio"], clip_es=raw["clip_es"])


ClassesInput = Union[Sequence[str], str, os.PathLike]  # names, or a class file


def check_class_names(names: Sequence[str], where: Callable[[int], str]) -> tuple[str, ...]:
    """Names with runs of whitespace collapsed, checked: none empty, too long, or the same as
    another once spaces are written as ``_`` (as ``tags.txt`` writes them). ``where(i)`` names the
    place of the ``i``-th name in errors."""
    seen: dict[str, str] = {}
    out = []
    for index, raw in enumerate(names):
        name = " ".join(str(raw).split())
        if not name:
            raise UserError(f"{where(index)}: empty class name")
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
    """Read one class name per line; blank lines and ``#`` comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class list not found")
    numbered = [(lineno, line.split("#", 1)[0]) for lineno, line in enumerate(read_lines(path), 1)]
    numbered = [(lineno, text) for lineno, text in numbered if text.strip()]
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
    return Preset(name=name, classes=names, background_words=words,
                  clip_es={"cam_names": list(names), "background_words": list(words),
                           "affinity_layers": [-8, -1], "label_space": "background+classes"})


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
    names = preset.clip_es.get("coarse27_names")
    if names is None:
        raise UserError(f"preset {preset.name}: no clip_es.coarse27_names (its label space is "
                        f"{preset.clip_es.get('label_space', 'background+classes')!r}, not coarse27)")
    expected = preset.clip_es.get("num_coarse", 27)
    if len(names) != expected or len(set(names)) != len(names):
        raise UserError(f"preset {preset.name}: clip_es.coarse27_names must hold {expected} distinct names, "
                        f"got {len(names)}")
    return tuple(str(n) for n in names)
