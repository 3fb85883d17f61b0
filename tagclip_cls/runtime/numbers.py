"""Numbers read from files and command lines: ASCII digits only, of the type asked for, finite.

Python's ``int()``, ``float()`` and ``str.isdigit()`` take any Unicode digit (``int('٣')`` is 3,
``'²'.isdigit()`` is true but ``int('²')`` fails), ``bool`` is an ``int``, and Python's JSON reader
accepts ``NaN`` and ``Infinity``. Every number a tool reads from the user goes through here, so a
file or flag means the same on every machine and a mistake is refused instead of misread.
"""
from __future__ import annotations

import math
import re
from typing import Any

#: at most 18 digits: every count fits, and int() refuses (with a ValueError) over 4300 digits
_INT = re.compile(r"[+-]?[0-9]{1,18}")
_INDEX = re.compile(r"[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse_int(text: str) -> int | None:
    """The integer written in ASCII digits (an optional sign), or ``None`` for anything else."""
    return int(text) if _INT.fullmatch(text) else None


def parse_index(text: str) -> int | None:
    """The non-negative integer written in ASCII digits alone (no sign), or ``None``."""
    return int(text) if _INDEX.fullmatch(text) else None


def parse_float(text: str) -> float | None:
    """The finite number written in ASCII decimal notation, or ``None`` (also for nan and inf)."""
    if not _FLOAT.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def is_json_int(value: Any) -> bool:
    """Whether a JSON value is an integer (``true`` and ``1.0`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_json_number(value: Any) -> bool:
    """Whether a JSON value is a finite number (not a bool, not NaN or Infinity)."""
    return is_json_int(value) or (isinstance(value, float) and math.isfinite(value))
