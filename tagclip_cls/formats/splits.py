"""Split files in the published format: one image per line, ``ID label label ...``.

Labels are class names without spaces, as the published files write them (COCO names such as
"traffic light" are written "traffic_light"); a line with only an ID has no labels.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.atomic_io import write_text_atomic
from tagclip_cls.runtime.ids import check_image_id
from tagclip_cls.runtime.numbers import parse_index


@dataclass(frozen=True)
class SplitEntry:
    image_id: str
    labels: tuple[int, ...] | None  # class indices, None when the split carries no labels


def label_token(name: str) -> str:
    """How a class name is written in a split file (spaces become underscores)."""
    return name.strip().replace(" ", "_")


def read_split(path: str | os.PathLike, class_names: Sequence[str]) -> list[SplitEntry]:
    """Read a split file; labels may be class names or integer indices."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: split file not found")
    by_token = {label_token(n): i for i, n in enumerate(class_names)}
    entries: list[SplitEntry] = []
    seen: set[str] = set()
    for lineno, line in enumerate(read_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        image_id, tokens = check_image_id(parts[0], f"{path}:{lineno}"), parts[1:]
        if image_id in seen:
            raise UserError(f"{path}:{lineno}: image id {image_id!r} listed twice")
        seen.add(image_id)
        labels = sorted({_parse_label(t, by_token, len(class_names), path, lineno) for t in tokens})
        entries.append(SplitEntry(image_id, tuple(labels) if tokens else None))
    if not entries:
        raise UserError(f"{path}: split file lists no images")
    return entries


def read_lines(path: Path) -> list[str]:
    """The lines of a text file (UTF-8, a byte-order mark dropped, any line ends)."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def _parse_label(token: str, by_token: dict[str, int], num_classes: int, path: Path, lineno: int) -> int:
    if token in by_token:
        return by_token[token]
    index = parse_index(token)
    if index is not None and index < num_classes:
        return index
    hint = f" (class indices are 0..{num_classes - 1})" if index is not None else ""
    raise UserError(f"{path}:{lineno}: unknown class label {token!r}{hint}")


def format_split_line(image_id: str, labels: Iterable[int], class_names: Sequence[str]) -> str:
    return " ".join([image_id, *(label_token(class_names[i]) for i in labels)])


def write_split(path: str | os.PathLike, rows: Iterable[tuple[str, Iterable[int]]],
                class_names: Sequence[str]) -> None:
    """Write ``(image_id, class indices)`` rows atomically in the published format."""
    lines = [format_split_line(i, sorted(labels), class_names) for i, labels in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")
