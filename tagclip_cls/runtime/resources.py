"""The one reader of the project's data files (presets, prompt templates, published figures,
split lists) and shipped mmseg configs, in a source checkout and in an installed wheel alike.

A checkout keeps them in the top-level ``data/`` and ``configs/`` folders; the wheel ships them
inside the package as ``tagclip_cls/data`` (the project's own files) and ``tagclip_cls/configs``
(``setup.py`` maps both there at build time), so there is one copy, and code never needs to know
where it runs from.
"""
from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "tagclip_cls"
CHECKOUT = Path(__file__).resolve().parents[2]


def shipped_root(folder: str) -> Traversable:
    """A top-level folder the wheel ships inside the package (``data``, ``configs``): the
    installed copy, else the checkout's (plain runs, ``PYTHONPATH`` and editable installs, which
    have no packaged copy)."""
    packaged = files(PACKAGE) / folder
    return packaged if packaged.is_dir() else CHECKOUT / folder


def data_root() -> Traversable:
    """The data folder (``data/`` of the checkout, ``tagclip_cls/data`` installed)."""
    return shipped_root("data")


def config_file(*parts: str) -> Path:
    """``configs/PART/...`` as a file path (mmengine reads a config and its ``_base_`` files by
    path), e.g. ``config_file("tiny", "deeplabv2_r18-tiny_voc-64x64.py")``."""
    return Path(str(shipped_root("configs"))).joinpath(*parts)


def data_file(*parts: str) -> Traversable:
    """``data/PART/...``, a file or folder to ``open()``, ``read_text()`` or ``iterdir()``;
    ``is_file()`` says whether it exists (e.g. ``data_file("presets", "voc2007.json")``)."""
    found = data_root()
    for part in parts:
        found = found / part
    return found
