"""Reading the JSON records the tools write (results and metrics files): one place that turns
an unreadable, broken or foreign file into a one-line :class:`UserError` naming it, and the
value checks their schemas share."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from tagclip_cls.runtime.errors import UserError


def read_json_record(path: str | os.PathLike, what: str, problem: Callable[[Any], str | None],
                     writers: str) -> Any:
    """The JSON value of ``path`` when ``problem(value)`` finds nothing wrong with it; else a
    ``UserError`` such as ``PATH: not a {what} (PROBLEM); it is written by {writers}``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a {what} (invalid JSON: {exc})") from None
    found = problem(record)
    if found:
        raise UserError(f"{path}: not a {what} ({found}); it is written by {writers}")
    return record


def is_percent(value: Any, nullable: bool = False) -> bool:
    """Whether ``value`` is a number in [0, 100] (not a bool), or ``None`` when ``nullable``."""
    if value is None:
        return nullable
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100


def is_count(value: Any) -> bool:
    """Whether ``value`` is a non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
