"""Image reading and CLIP preprocessing shared by stages 1 and 2.

Images go to RGB whatever their mode (grey, palette, CMYK, alpha, 16-bit; float images in [0, 1]
scaled), keep their stored orientation (the EXIF rotation is not applied, as in the published
code), are resized with
bicubic interpolation straight to the next multiple of the patch size on each side (no crop)
and normalised with CLIP's mean and std.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.ids import check_image_id

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: images with more pixels are refused from their header, before any decoding (``--max-pixels``
#: raises it). Stage 2 held 33 bytes per pixel at its peak (5.6 GB for a 13000 x 13000 PNG of
#: 169 million pixels: decoded RGB, full-size CAMs, label maps); at 100 million pixels the three
#: images a 2-core machine has in flight (two reader threads and the one being computed, with
#: ``--loader-threads 2``) need 10 GB, under half of a 24 GiB machine, leaving the rest to the
#: model and the system. PIL's own limit (179 million) would let that PNG through.
DEFAULT_MAX_PIXELS = 100_000_000
#: both stages scale images whose longer side exceeds this: attention memory grows with the fourth
#: power of the side (a 4000 x 3000 photo asked for a 17.7 GB attention tensor in stage 2)
DEFAULT_MAX_SIDE = 1024

#: what the Python API takes as an image: a file path, a PIL image, or an ``H x W x 3`` (or
#: ``H x W``) uint8 array in RGB order
ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
_OPEN_LOCK = threading.Lock()  # guards PIL's global pixel limit while a header is read


@dataclass
class PreparedImage:
    """One image ready for CLIP: the normalised tensor and the size it came from."""

    tensor: torch.Tensor  # 3 x H' x W', H' and W' multiples of the patch size
    orig_size: tuple[int, int]  # (H, W) of the file


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file fully (mode kept); unreadable or truncated files, and files of more
    than ``max_pixels`` (checked from the header, before decoding), raise :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image not found")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not an image")
    try:
        with open_image(path, max_pixels) as img:
            img.load()
            return _to_8bit(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: unreadable image ({_first_line(exc)})") from None


def open_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image file opened lazily (only its header read), or :class:`UserError` when it has more
    than ``max_pixels`` pixels: a 20 KB PNG can claim 13000 x 13000 and decode to gigabytes.

    PIL's own global limit is lifted while the header is read (under a lock: reader threads open
    images side by side), so that ``max_pixels`` alone decides, above or below PIL's default."""
    with _OPEN_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise UserError(f"{path}: image of {width} x {height} = {width * height} pixels, more than the "
                        f"{max_pixels} allowed (raise --max-pixels to read it)")
    return img


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_rgb(image: "ImageInput") -> np.ndarray:
    """The image as an ``H x W x 3`` uint8 RGB array (grey, palette, CMYK and alpha converted)."""
    return np.asarray(as_pil(image).convert("RGB"))


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # high-bit-depth grey: scale to 8 bits instead of letting PIL clip at 255
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
            top = 1.0  # a float image in [0, 1] (as scientific TIFFs are), not 0..255
        else:
            top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    return img


def snapped_size(height: int, width: int, patch: int) -> tuple[int, int]:
    """The (H', W') the image is resized to: each side rounded up to a multiple of ``patch``."""
    return math.ceil(height / patch) * patch, math.ceil(width / patch) * patch


def model_input_size(height: int, width: int, patch: int, max_side: int | None = None) -> tuple[int, int]:
    """The (H', W') an image of ``height x width`` is resized to before CLIP.

    Each side is rounded up to a multiple of ``patch``; ``max_side`` first scales down images
    whose longer side exceeds it (attention memory grows with the fourth power of the side).
    """
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return snapped_size(height, width, patch)


def to_clip_tensor(img: Image.Image, patch: int, max_side: int | None = None) -> torch.Tensor:
    """Resize (bicubic) to :func:`model_input_size`, convert to RGB, normalise (CLIP mean/std).

    As in the published code the resize happens in the file's own mode (RGBA, CMYK, grey) and
    the conversion to RGB after it; palette and bilevel images are converted first.
    """
    new_h, new_w = model_input_size(img.height, img.width, patch, max_side)
    if img.mode in ("P", "PA", "1"):
        img = img.convert("RGB")
    resized = img.resize((new_w, new_h), Image.BICUBIC).convert("RGB")
    arr = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (arr - mean) / std


def as_pil(image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image as PIL, decoded exactly as the tools decode files (see :func:`load_image`;
    ``max_pixels`` applies to files)."""
    if isinstance(image, Image.Image):
        return _to_8bit(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"expected an H x W x 3 (or H x W) uint8 array, got {image.dtype} {image.shape}")
        return Image.fromarray(np.ascontiguousarray(image))
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels)
    raise TypeError(f"expected a path, a PIL image or a uint8 array, got {type(image).__name__}")


def prepare_image(image: ImageInput, patch: int, max_side: int | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> PreparedImage:
    """Decode (paths, up to ``max_pixels``) and preprocess one image for CLIP."""
    img = as_pil(image, max_pixels)
    return PreparedImage(tensor=to_clip_tensor(img, patch, max_side),
                         orig_size=(img.height, img.width))


def read_image_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(H, W)`` from the file header only (cheap), or :class:`UserError` if it can't be read or
    has more than ``max_pixels`` pixels."""
    path = Path(path)
    try:
        with open_image(path, max_pixels) as img:
            return img.height, img.width
    except FileNotFoundError:
        raise UserError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: unreadable image ({_first_line(exc)})") from None


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files directly in ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    for path in files:
        check_image_id(path.stem, path)
    return files


def find_image(root: str | os.PathLike, image_id: str) -> Path:
    """The file for a split's image id: ``ID`` plus any known image suffix."""
    root = Path(root)
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        candidate = root / f"{image_id}{suffix}"
        if candidate.is_file():
            return candidate
    hint = " (ids are file names without extension)" if Path(image_id).suffix.lower() in IMAGE_SUFFIXES else ""
    raise UserError(f"{root / image_id}.*: image named in the split not found{hint}")
