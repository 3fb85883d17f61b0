"""Image ids and the output paths built from them.

An image id is a file name without folder and extension (``2007_000032``,
``COCO_val2014_000000000042``): every output of an image is ``ROOT/sub/ID.ext``. Ids come from
files the user hands over (splits, tags files, COCO JSON, folder listings), so they are checked
before anything is written: no folder part (sub-folders are not supported by any stage), no
``..``, no whitespace or control characters, no leading dot, at most :data:`MAX_ID_BYTES` bytes
in UTF-8 (room for a temporary name beside the output). Every output path is also checked to
lie inside the root it was built for.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from .errors import UserError

MAX_ID_BYTES = 200


def id_problem(image_id: str) -> str | None:
    """Why ``image_id`` can't name an output file, or ``None`` when it can."""
    if not image_id:
        return "empty image id"
    if "/" in image_id or "\\" in image_id:
        return "image ids are file names without folders ('/' and '\\' are not allowed)"
    if image_id.startswith("."):
        return "image ids may not start with '.'"
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in image_id):
        return "image ids may not contain whitespace or control characters"
    if len(image_id.encode("utf-8", "surrogateescape")) > MAX_ID_BYTES:
        return f"image id longer than {MAX_ID_BYTES} bytes"
    return None


def check_image_id(image_id: str, where: str | os.PathLike) -> str:
    """Return ``image_id`` if it is safe (see module doc); otherwise a :class:`UserError` that
    names ``where`` (``file:line`` or the file the id came from)."""
    problem = id_problem(image_id)
    if problem:
        raise UserError(f"{where}: {problem}: {image_id!r}")
    return image_id


def inside_root(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path``, refused (:class:`UserError`) unless it resolves (links followed) to a path below
    ``root``: the one check every write goes through, so that neither an id nor a link planted in
    an output folder can send a write elsewhere. Its folder must resolve to ``root`` or below as
    well, since an atomic write creates its temporary file there."""
    root, path = Path(root), Path(path)
    base = root.resolve()
    for resolved, may_be_root in ((path.parent.resolve(), True), (path.resolve(), False)):
        if not (base in resolved.parents or (may_be_root and resolved == base)):
            raise UserError(f"{path}: would be written outside {root} (it leads to {resolved})")
    return path


def path_inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root/parts...``, refused (:class:`UserError`) unless it resolves to a path inside ``root``."""
    return inside_root(root, Path(root).joinpath(*parts))
