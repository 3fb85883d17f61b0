"""Which images share a forward pass: the batch plan both stages use.

A plan depends only on the list of images and their file headers, never on which outputs
already exist or on the number of ``torchrun`` ranks: batched products round differently from
one-by-one ones, so resumed and sharded runs keep the bits of one uninterrupted process only
when every image is computed in the same company.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tagclip_cls.runtime.errors import UserError

# by exact input grid, or any sizes padded and masked into one pass
BATCHINGS = ("grid", "mixed")


@dataclass(frozen=True)
class ImageEntry:
    """One image of a run: its id, its file and its labels (stage 1: ground truth, if known;
    stage 2: the tags whose CAMs it needs)."""

    image_id: str
    path: Path
    labels: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Batch:
    """Images computed together: of one model input size, or of several with ``mixed`` batching."""

    entries: tuple[ImageEntry, ...]


def default_batching(device: str) -> str:
    """``mixed`` on a GPU, where fuller batches pay; ``grid`` on a CPU, where the padding of a
    mixed batch is paid in full (stage 1, ViT-B/16 on the 2-core Xeon: 0.38 images/s mixed
    against 0.45 grid, batch 8, VOC sizes)."""
    return "grid" if device.split(":")[0] == "cpu" else "mixed"


def check_batching(batch_size: int, batching: str) -> None:
    """One-line errors for a batch size below 1 and an unknown batching."""
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if batching not in BATCHINGS:
        raise UserError(f"--batching must be one of {', '.join(BATCHINGS)}, not {batching!r}")


def plan_batches(entries: Sequence[ImageEntry], patch: int, max_side: int | None, batch_size: int,
                 strict: bool, batching: str = "grid",
                 max_pixels: int | None = None) -> tuple[list[Batch], dict[str, str]]:
    """Split the images into batches; only file headers are read.

    ``grid`` (default): each batch holds images of one model input size (input order within a
    size). ``mixed``: any sizes share a batch (one padded, masked pass); images are sorted by
    token count (then grid, then input order) so that the padding stays small and images of one
    grid stay together. Returns the batches and, for unreadable files, the reasons they are
    skipped (raises instead when ``strict``); files of more than ``max_pixels`` pixels (``None``:
    :data:`~tagclip_cls.core.images.DEFAULT_MAX_PIXELS`) are unreadable ones.
    """
    # torch: not while the tools parse
    from tagclip_cls.core.images import DEFAULT_MAX_PIXELS, model_input_size, read_image_size

    sized: list[tuple[tuple[int, int], ImageEntry]] = []
    skipped: dict[str, str] = {}
    for entry in entries:
        try:
            height, width = read_image_size(entry.path, max_pixels or DEFAULT_MAX_PIXELS)
        except UserError as err:
            if strict:
                raise
            skipped[entry.image_id] = str(err)
            continue
        sized.append((model_input_size(height, width, patch, max_side), entry))
    if batching == "mixed":
        ordered = [entry for _, entry in sorted(sized, key=lambda item: (item[0][0] * item[0][1], item[0]))]
        groups = [ordered]
    else:
        by_size: dict[tuple[int, int], list[ImageEntry]] = {}
        for size, entry in sized:
            by_size.setdefault(size, []).append(entry)
        groups = list(by_size.values())
    batches = [Batch(tuple(group[i:i + batch_size])) for group in groups for i in range(0, len(group), batch_size)]
    return batches, skipped
