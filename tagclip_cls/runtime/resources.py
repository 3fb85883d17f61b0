"""The one reader of the project's data files (presets, prompt templates, published figures,
split lists), in a source checkout and in an installed wheel alike.

A checkout keeps them in the top-level ``data/`` folder; the wheel ships that folder's project
files as the package data ``tagclip_cls/data`` (``setup.py`` maps ``data/`` there at build time),
so there is one copy, and code never needs to know where it runs from.
"""
from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "tagclip_cls"
PACKAGED = "data"  # the folder inside the installed package (setup.py's mapping)
CHECKOUT_DATA = Path(__file__).resolve().parents[2] / "data"


def data_root() -> Traversable:
    """The data folder: the wheel's package data when installed, else the checkout's ``data/``
    (plain runs, ``PYTHONPATH`` and editable installs, which have no packaged copy)."""
    packaged = files(PACKAGE) / PACKAGED
    return packaged if packaged.is_dir() else CHECKOUT_DATA


def data_file(*parts: str) -> Traversable:
    """``data/PART/...``, a file or folder to ``open()``, ``read_text()`` or ``iterdir()``;
    ``is_file()`` says whether it exists (e.g. ``data_file("presets", "voc2007.json")``)."""
    found = data_root()
    for part in parts:
        found = found / part
    return found
