"""The project's shipped data files (``data/``): presets, templates, published splits."""
from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def data_file(*parts: str) -> Path:
    """The path of the shipped data file ``data/PART/...`` (whether it exists is not checked)."""
    return DATA_DIR.joinpath(*parts)
