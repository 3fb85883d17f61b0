"""Label PNGs: class-id maps stored as palette images (0 background, class + 1, 255 ignore).

Masks are written as PIL mode "P" with the standard VOC colour palette, so they are both
viewable and readable as plain indices; reading returns the index array, never RGB.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.atomic_io import atomic_write
from tagclip_cls.runtime.ids import check_image_id

IGNORE = 255
#: zlib level of the label PNGs: PIL's default (6) took 4.8 ms for a 375 x 500 label map of three
#: regions on the 2-core Xeon, 3 takes 1.9 ms for files 1.3 times larger (15 KB); stage 2 writes
#: two per image, which on a GPU is what the host has to keep up with
PNG_COMPRESS_LEVEL = 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the modes of a label PNG: palette indices or 8-bit grey values, each the label id
LABEL_MODES = ("P", "L")


def voc_palette() -> list[int]:
    """The 256-entry VOC colour map (flat ``[r, g, b, r, g, b, ...]``); index 255 is (224, 224, 192)."""
    palette: list[int] = []
    for index in range(256):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = voc_palette()


def write_label_png(path: str | os.PathLike, labels: np.ndarray, root: str | os.PathLike | None = None) -> None:
    """Write an ``H x W`` map of label ids (0..255) as a palette PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if labels.size and (labels.min() < 0 or labels.max() > 255):
            raise ValueError("label ids must lie in 0..255")
        labels = labels.astype(np.uint8)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    image.putpalette(_PALETTE)
    atomic_write(path, lambda f: image.save(f, format="PNG", compress_level=PNG_COMPRESS_LEVEL), "wb", root)


def label_png_problem(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` is not a label PNG, or ``None``; reads its header only.

    The first 8 bytes must be the PNG signature (a JPEG renamed ``.png`` decodes to plausible
    labels, so the bytes decide, not the name) and the mode one of :data:`LABEL_MODES`."""
    try:
        with open(path, "rb") as f:
            if f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                return "not a PNG file (a label map must be a PNG, not a renamed image)"
        with Image.open(path, formats=("PNG",)) as image:
            mode = image.mode
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        return f"cannot read label image ({exc})"
    if mode not in LABEL_MODES:
        return f"expected a palette (P) or 8-bit greyscale (L) label PNG, got mode {mode}"
    return None


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG (:func:`label_png_problem`) as its ``H x W`` uint8 index array."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: label file not found")
    problem = label_png_problem(path)
    if problem:
        raise UserError(f"{path}: {problem}")
    try:
        with Image.open(path, formats=("PNG",)) as image:
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise UserError(f"{path}: cannot read label image ({exc})") from None


def png_ids(folder: str | os.PathLike) -> list[str]:
    """The ids of every ``ID.png`` in ``folder``, sorted and checked (:mod:`tagclip_cls.runtime.ids`)."""
    paths = sorted(Path(folder).glob("*.png"))
    if not paths:
        raise UserError(f"{folder}: no PNG masks found")
    return [check_image_id(p.stem, p) for p in paths]
