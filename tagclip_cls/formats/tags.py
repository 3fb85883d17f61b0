"""Stage 1's output folder: ``tags.jsonl``, ``tags.txt`` and ``skipped.txt``.

* ``tags.jsonl``: one object per image in input order, ``id``, ``scores`` (the K final class
  scores), ``tags`` (class indices, ascending) and ``tag_names``;
* ``tags.txt``: ``ID tag tag ...`` in the published split format (:mod:`.splits`), which stage 2 reads;
* ``skipped.txt``: ``ID<TAB>reason`` for each unreadable image;
* ``parts/``: the per-rank results and ``run_config.json``, the settings they were made with.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tagclip_cls.formats.splits import format_split_line, read_lines
from tagclip_cls.runtime.atomic_io import write_text_atomic
from tagclip_cls.runtime.errors import UserError, one_line
from tagclip_cls.runtime.ids import id_problem
from tagclip_cls.runtime.numbers import is_json_int, is_json_number


def tag_record(image_id: str, scores: Iterable[float], tags: Sequence[int], names: Sequence[str]) -> dict:
    """One ``tags.jsonl`` object."""
    return {"id": image_id, "scores": [float(v) for v in scores], "tags": list(tags), "tag_names": list(names)}


@dataclass(frozen=True)
class TagFolder:
    """Where stage 1's files lie in its output folder, with their readers and writers."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def jsonl(self) -> Path:
        return self.root / "tags.jsonl"

    @property
    def txt(self) -> Path:
        return self.root / "tags.txt"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.txt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def parts(self) -> Path:
        """Per-rank ``rank-R-of-N.jsonl`` files of finished images, kept for resuming."""
        return self.root / "parts"

    @property
    def run_config(self) -> Path:
        """The settings the tags were made with (``random_weights`` among them)."""
        return self.parts / "run_config.json"

    def write(self, records: Sequence[dict], class_names: Sequence[str], skipped: dict[str, str]) -> None:
        """``tags.jsonl`` and ``tags.txt`` in the order of ``records``, and ``skipped.txt`` if any
        (one line per image: line breaks in a reason are escaped)."""
        write_text_atomic(self.jsonl, "".join(json.dumps(r) + "\n" for r in records), self.root)
        write_text_atomic(self.txt, "".join(format_split_line(r["id"], r["tags"], class_names) + "\n"
                                            for r in records), self.root)
        if skipped:
            write_text_atomic(self.skipped, "".join(f"{k}\t{one_line(v)}\n" for k, v in sorted(skipped.items())),
                              self.root)

    def records(self, num_classes: int | None = None) -> list[dict]:
        """The ``tags.jsonl`` records in file order (a one-line error for a malformed line, or
        for a tag outside ``0..num_classes - 1`` when ``num_classes`` is given)."""
        return read_tag_records(self.jsonl, num_classes)

    def skipped_ids(self) -> set[str]:
        if not self.skipped.is_file():
            return set()
        return {line.split("\t", 1)[0] for line in read_lines(self.skipped) if line}


def read_tag_records(path: str | os.PathLike, num_classes: int | None = None) -> list[dict]:
    """Records of a ``tags.jsonl`` (``id``, ``scores``, ``tags``), in file order, each checked
    (:func:`tag_record_problem`) with ``num_classes`` scores where given, else as many as the
    first; a one-line error names the line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: tags file not found")
    records: list[dict] = []
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path}:{lineno}: not a stage-1 record with id, scores and tags (not JSON)") from None
        expected = num_classes if num_classes is not None else len(records[0]["scores"]) if records else None
        problem = tag_record_problem(record, expected)
        if problem:
            raise UserError(f"{path}:{lineno}: {problem}")
        records.append(record)
    return records


def tag_record_problem(record: Any, num_classes: int | None = None) -> str | None:
    """What makes ``record`` not a stage-1 record, or ``None``: ``id`` an image id, ``scores`` a
    list of finite numbers (``num_classes`` of them when given), ``tags`` distinct integer
    indices into the scores, ``tag_names`` (optional) a list of strings."""
    if not isinstance(record, dict) or not {"id", "scores", "tags"} <= set(record):
        return "not a stage-1 record with id, scores and tags"
    problem = id_problem(record["id"]) if isinstance(record["id"], str) else "image ids must be strings"
    if problem:
        return f"id {record['id']!r}: {problem}"
    scores, tags = record["scores"], record["tags"]
    where = f"image {record['id']!r}"
    if not (isinstance(scores, list) and scores and all(is_json_number(v) for v in scores)):
        return f"{where}: scores must be a non-empty list of finite numbers"
    if num_classes is not None and len(scores) != num_classes:
        return f"{where}: {len(scores)} scores, expected {num_classes} (one per class)"
    if not (isinstance(tags, list) and all(is_json_int(t) and 0 <= t < len(scores) for t in tags)):
        return f"{where}: tags must be a list of class indices 0..{len(scores) - 1}"
    if len(set(tags)) != len(tags):
        return f"{where}: a tag is listed twice"
    names = record.get("tag_names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return f"{where}: tag_names must be a list of strings"
    return None


def tags_split_file(path: str | os.PathLike) -> Path:
    """The ``ID label ...`` file stage 2 reads from ``path``: a stage-1 folder's ``tags.txt``, or
    the file itself; stage 1's ``tags.jsonl`` is refused with a pointer to ``tags.txt``."""
    path = Path(path)
    if path.is_dir():
        path = TagFolder(path).txt
    elif path.name.endswith(".jsonl"):
        raise UserError(f"{path}: this is stage 1's tags.jsonl; pass its tags.txt "
                        f"({path.with_name('tags.txt')}) or the folder {path.parent}")
    if not path.is_file():
        raise UserError(f"{path}: tags file not found")
    return path
