"""Tag a list of images with a built :class:`Tagger` and write stage 1's outputs, resumable and
shardable (:mod:`.run` builds the Tagger from the tool's options and calls :func:`tag_images`).

Outputs in ``OUT_DIR``: ``tags.jsonl`` (one object per image, input order), ``tags.txt``
(published ``ID tag tag ...`` format, read by stage 2), ``metrics.json`` when labels are known,
and ``skipped.txt`` listing unreadable images. While running, each rank appends finished
batches to ``parts/rank-R-of-W.jsonl``; a killed run resumes from there.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from tagclip_cls.runtime.distributed import RankInfo, shard, wait_for_all
from tagclip_cls.runtime.errors import UserError, disk_faults_named, is_out_of_memory
from tagclip_cls.runtime.ids import inside_root
from tagclip_cls.runtime.setup import check_run_config
from tagclip_cls.runtime.atomic_io import write_json_atomic
from tagclip_cls.tagging.metrics import classification_metrics, format_summary
from tagclip_cls.runtime.overlap import BackgroundWriter, read_batches_ahead
from tagclip_cls.core.batches import ImageEntry, plan_batches
from tagclip_cls.core.images import PreparedImage, find_image, list_images
from tagclip_cls.formats.splits import read_split
from tagclip_cls.formats.tags import TagFolder, tag_record
from tagclip_cls.tagging.api import Tagger

log = logging.getLogger(__name__)


class PartFile:
    """Append-only record of finished batches for one rank; a torn last line is ignored.
    Appends go only to a file inside ``root`` (the output folder), checked before each one."""

    def __init__(self, path: Path, root: Path | None = None):
        self.path = path
        self.root = path.parent if root is None else root

    def load(self) -> dict[str, dict]:
        done: dict[str, dict] = {}
        if not self.path.is_file():
            return done
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: its batch is simply redone
            done.update({r["id"]: r for r in records})
        return done

    def append(self, records: list[dict]) -> None:
        """Append one batch's records as one line, inside the output folder; a write the storage
        refuses raises a :class:`WriteError` naming the part file (a torn line it leaves is redone
        on resuming)."""
        inside_root(self.root, self.path)
        text = json.dumps(records) + "\n"
        with disk_faults_named(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                if f.tell() and not self._ends_with_newline():
                    f.write("\n")  # seal a torn line left by an earlier kill
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


def load_entry(tagger: Tagger, entry: ImageEntry, strict: bool) -> tuple[str, PreparedImage] | dict:
    """The image's ``(id, image)`` pair, or its error record when it can't be read or runs out
    of memory while decoding (raised as a :class:`UserError` when ``strict``)."""
    try:
        return entry.image_id, tagger.prepare(entry.path)
    except UserError as err:
        return error_record(entry.image_id, err, strict)
    except MemoryError:
        error = UserError(f"{entry.path}: out of memory while decoding the image")
    return error_record(entry.image_id, error, strict)  # out of the except block: the frame's arrays are freed


def error_record(image_id: str, error: UserError, strict: bool) -> dict:
    """The part-file record of an image that failed (listed in ``skipped.txt``); ``strict``: raises ``error``."""
    if strict:
        raise error
    return {"id": image_id, "error": str(error)}


def tag_records(tagger: Tagger, images: list[tuple[str, PreparedImage]], strict: bool = False) -> list[dict]:
    """``tags.jsonl`` records of a batch of prepared images (of one size or of several); running
    out of memory fails the batch's images (their error records), not the run."""
    if not images:
        return []
    try:
        results = tagger.tag_batch([im.tensor for _, im in images])
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        results = None
    if results is None:  # out of the except block: its traceback no longer holds the batch's tensors
        return [error_record(image_id, UserError(
            f"{image_id}: out of memory at {im.tensor.shape[2]}x{im.tensor.shape[1]} in a batch of {len(images)} "
            f"(rerun with a lower --batch-size or --max-side into another --out, or with --overwrite)"), strict)
            for image_id, im in images]
    return [tag_record(image_id, r.scores, r.tags, r.names) for (image_id, _), r in zip(images, results)]


def tag_images(tagger: Tagger, entries: Sequence[ImageEntry], out_dir: str | os.PathLike,
               run_config: dict, batch_size: int = 1, strict: bool = False, overwrite: bool = False,
               rank: RankInfo = RankInfo(), loader_threads: int = 0, progress: bool = True,
               batching: str = "grid") -> dict | None:
    """Tag ``entries`` into ``out_dir``; returns the metrics (when labels are known) on rank 0.
    ``loader_threads`` decode the next batches while the model runs (worth it next to a GPU), and
    then the finished batches are appended to the part file in the background;
    ``batching="mixed"`` lets images of different sizes share a batch (see
    :func:`~tagclip_cls.core.batches.plan_batches`).

    ``run_config`` describes what produces the scores (model, classes, method, ...): resuming
    into a folder written with a different one is refused.
    """
    out_dir = Path(out_dir)
    ids = [e.image_id for e in entries]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise UserError(f"image id {dup!r} appears twice in the input (ids are file names without extension)")
    folder = TagFolder(out_dir)
    parts_dir = folder.parts
    own_part = PartFile(parts_dir / f"rank-{rank.rank}-of-{rank.world_size}.jsonl", out_dir)
    inside_root(out_dir, own_part.path)  # at once, not after the first batch (each append checks again)
    if overwrite and rank.is_main:
        for path in [*parts_dir.glob("rank-*.jsonl"), folder.run_config]:
            path.unlink(missing_ok=True)
    wait_for_all(rank)  # nobody reads the parts before rank 0 has cleared them
    check_run_config(folder.run_config, run_config, write=rank.is_main, root=out_dir)
    batches, skipped = plan_batches(entries, tagger.clip.patch_size, tagger.max_side, batch_size, strict, batching,
                                    tagger.max_pixels)
    done = load_parts(parts_dir)
    todo = [b for b in shard(batches, rank) if not all(e.image_id in done for e in b.entries)]
    log.info("rank %d/%d: %d batches to run, %d images already done", rank.rank, rank.world_size,
             len(todo), len(done))
    # with reader threads (a GPU) the part file's appends and fsyncs run in the background too
    with tqdm(total=sum(len(b.entries) for b in todo), desc="tagging", unit="img",
              disable=not (progress and rank.is_main)) as bar, BackgroundWriter(inline=loader_threads == 0) as writer:
        for loaded in read_batches_ahead(lambda entry: load_entry(tagger, entry, strict),
                                         [batch.entries for batch in todo], loader_threads):
            images = [item for item in loaded if isinstance(item, tuple)]
            errors = [item for item in loaded if isinstance(item, dict)]
            writer.submit(own_part.append, tag_records(tagger, images, strict) + errors)
            bar.update(len(loaded))
    wait_for_all(rank)
    if not rank.is_main:
        return None
    return merge_outputs(entries, out_dir, tagger.class_names, skipped)


def load_parts(parts_dir: Path) -> dict[str, dict]:
    """Every finished record in the part files of ``parts_dir``, whatever rank wrote it."""
    records: dict[str, dict] = {}
    for path in sorted(parts_dir.glob("rank-*.jsonl")):
        records.update(PartFile(path).load())
    return records


def merge_outputs(entries: Sequence[ImageEntry], out_dir: Path, class_names: Sequence[str],
                  skipped: dict[str, str]) -> dict | None:
    """Collect every rank's part file into the final outputs, in input order."""
    records = load_parts(TagFolder(out_dir).parts)
    for image_id, record in list(records.items()):
        if "error" in record:
            skipped[image_id] = record.pop("error")
            del records[image_id]
    missing = [e.image_id for e in entries if e.image_id not in records and e.image_id not in skipped]
    if missing:
        raise RuntimeError(f"{len(missing)} images have no result (first: {missing[0]}); rerun to resume")
    kept = [e for e in entries if e.image_id in records]
    folder = TagFolder(out_dir)
    folder.write([records[e.image_id] for e in kept], class_names, skipped)
    if skipped:
        log.warning("%d unreadable images skipped, listed in %s", len(skipped), folder.skipped)
    log.info("wrote %d images to %s", len(kept), folder.jsonl)
    if not kept or all(e.labels is None for e in kept):
        return None
    metrics = evaluate_records([records[e.image_id] for e in kept], [e.labels or () for e in kept], class_names)
    write_json_atomic(folder.metrics, metrics, root=out_dir)
    print(format_summary(metrics))
    return metrics


def evaluate_records(records: Sequence[dict], labels: Sequence[Sequence[int]], class_names: Sequence[str]) -> dict:
    num = len(class_names)
    scores = np.array([r["scores"] for r in records], dtype=np.float64)
    truth = np.zeros((len(records), num), dtype=bool)
    predicted = np.zeros_like(truth)
    for i, (record, positive) in enumerate(zip(records, labels)):
        truth[i, list(positive)] = True
        predicted[i, record["tags"]] = True
    return classification_metrics(scores, truth, predicted, class_names)


def collect_entries(img_root: str | os.PathLike, split: str | os.PathLike | None,
                    class_names: Sequence[str]) -> list[ImageEntry]:
    """The images to tag: those listed in ``split`` (with their labels), else all of ``img_root``."""
    if split is None:
        return [ImageEntry(p.stem, p) for p in list_images(img_root)]
    entries = []
    missing = []
    for item in read_split(split, class_names):
        try:
            entries.append(ImageEntry(item.image_id, find_image(img_root, item.image_id), item.labels))
        except UserError:
            missing.append(item.image_id)
    if missing:
        raise UserError(f"{split}: {len(missing)} listed images not found in {img_root} "
                        f"(first: {missing[0]})")
    return entries
