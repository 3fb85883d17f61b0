"""Dataset presets (``data/presets/NAME.json``) and custom class lists.

A preset holds the target classes, the background words and the per-dataset constants of
both stages (layer ranges relative to depth, relative thresholds, CLIP-ES name variants).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def read_class_file(path: str | os.PathLike) -> tuple[str, ...]:
    """Read one class name per line; blank lines and ``#`` comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class list not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: class list is not UTF-8 text") from None
    names: list[str] = []
    for lineno, line in enumerate(lines, 1):
        name = " ".join(line.split("#", 1)[0].split())
        if not name:
            continue
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise UserError(f"{path}:{lineno}: class name longer than {MAX_CLASS_NAME_CHARS} characters")
        if name in names:
            raise UserError(f"{path}:{lineno}: duplicate class name {name!r}")
        names.append(name)
    if not names:
        raise UserError(f"{path}: class list is empty")
    return tuple(names)


def custom_preset(classes_file: str | os.PathLike, background_file: str | os.PathLike | None = None) -> Preset:
    """A preset for the user's own classes, with the VOC-style constants of the paper."""
    classes = read_class_file(classes_file)
    background = read_class_file(background_file) if background_file else ()
    clash = set(classes) & set(background)
    if clash:
        raise UserError(f"{background_file}: background words also listed as classes: {sorted(clash)}")
    return Preset(name=Path(classes_file).stem, classes=classes, background_words=background,
                  clip_es={"cam_names": list(classes), "background_words": list(background),
                           "affinity_layers": [-8, -1], "label_space": "background+classes"})
