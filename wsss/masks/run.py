"""Stage 2 end to end: images + tags in, CAM files and label PNGs (optionally CRF-refined) out.

Output layout under ``out``::

    cams/ID.npz       keys (int64 class indices), cams (float16 K x H x W, original size)
    masks/ID.png      palette PNG: 0 background, class index + 1 (COCO-Stuff: coarse-27 ids), 255 ignore
    masks_crf/ID.png  the same after the dense CRF (with ``crf_masks``)
    config.json       the settings the files were made with (a resumed run must match)

Every file is written atomically, each image's files are independent, and images whose outputs
exist are skipped, so a killed run is resumed by running it again and ``torchrun`` ranks need no
merging. Images are computed in batches (``batch_size``, ``batching``) planned from the whole
list before it is shared out (rank ``r`` of ``W`` takes batches ``r, r + W, ...``), and a batch
with an image to compute is computed whole: every image keeps the company, and so the bits, of
one uninterrupted process.
"""
from __future__ import annotations

import logging
import threading
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from tagclip_cls.core.batches import Batch, ImageEntry, check_batching, plan_batches
from tagclip_cls.core.images import PreparedImage, as_pil, find_image, load_rgb
from tagclip_cls.core.models import load_clip
from tagclip_cls.core.presets import Preset, make_preset
from tagclip_cls.formats.mask_folder import MaskFolder, read_cam_keys, read_cams, write_cams
from tagclip_cls.formats.mask_png import write_label_png
from tagclip_cls.formats.splits import SplitEntry, read_split
from tagclip_cls.runtime.distributed import RankInfo, device_for_rank, rank_info, shard
from tagclip_cls.runtime.errors import UserError, is_out_of_memory
from tagclip_cls.runtime.overlap import BackgroundWriter, read_batches_ahead
from tagclip_cls.runtime.setup import check_device_and_output, check_run_config, share_cpu_threads
from wsss.masks.api import MaskChoices, MaskGenerator, MaskOptions
from wsss.masks.crf import CRFJob, CRFWork, crf_label_maps, run_crf_batch
from wsss.masks.label_maps import LabelSpace, label_map

log = logging.getLogger(__name__)
_COUNTS = threading.Lock()  # the summary's counts, changed by the writer threads too


@dataclass(kw_only=True)
class MaskRunOptions(MaskChoices):
    """Everything ``tools/gen_pseudo_masks.py`` takes (see its ``--help``): the stage's choices
    (:class:`MaskChoices`, one set of defaults with the API) and the run's inputs and outputs."""

    img_root: str
    tags: str
    out: str
    dataset: str | None = None
    classes: str | None = None
    background: str | None = None
    model: str | None = None
    pretrained: str = "openai"
    batch_size: int = 1
    crf_masks: bool = False  # also write masks_crf/ (--crf)
    crf_workers: int = 1
    threads: int | None = None
    cache_dir: str | None = None
    strict: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class MaskRunSummary:
    computed: int = 0  # images whose CAMs were computed in this run
    existing: int = 0  # images whose outputs were already there
    failed: dict[str, str] = field(default_factory=dict)  # image id -> reason
    crf_written: int = 0

    def line(self, rank: RankInfo) -> str:
        who = f"rank {rank.rank}/{rank.world_size}: " if rank.world_size > 1 else ""
        text = (f"{who}{self.computed} images computed, {self.existing} already done, "
                f"{len(self.failed)} failed")
        if self.failed:
            text += " (" + ", ".join(list(self.failed)[:5]) + (", ..." if len(self.failed) > 5 else "") + ")"
        if self.crf_written:
            text += f", {self.crf_written} CRF masks written"
        return text


def build_generator(preset: Preset, opts: MaskRunOptions, options: MaskOptions,
                    device: torch.device) -> MaskGenerator:
    """Load CLIP and the CLIP-ES text features (name variants, background words; cached)."""
    return MaskGenerator(load_clip(opts.model, opts.pretrained, device, fp16_weights=True), preset, options,
                         cache_dir=opts.cache_dir)


def _check_options(opts: MaskRunOptions) -> None:
    if opts.ignore_below is not None and not opts.crf_masks:
        raise UserError("--ignore-below applies to the CRF result: add --crf")
    if opts.crf_workers < 0:
        raise UserError("--crf-workers must be 0 or more")
    check_device_and_output(opts.device, opts.out)


def run_stage2(opts: MaskRunOptions, verify_only: bool = False) -> MaskRunSummary:
    """Generate CAMs and label maps for this rank's share of the images in ``opts.tags``.
    ``verify_only``: only refuse an output folder made with other settings or weights (the model
    loads for its fingerprint), computing nothing."""
    _check_options(opts)
    rank = rank_info()
    preset = make_preset(opts.dataset, opts.classes, opts.background)
    device = device_for_rank(opts.device, rank)
    options = replace(opts, device=str(device)).resolve(preset)  # this rank's GPU, for the CRF too
    batching = options.runtime.batching
    check_batching(opts.batch_size, batching)
    share_cpu_threads(opts.threads)
    LabelSpace.from_preset(preset)  # a label space that fits 8-bit PNGs, checked before anything loads
    entries = read_split(opts.tags, preset.classes)
    layout = MaskFolder(opts.out)
    settings = {"classes": list(preset.classes), "cam_names": list(preset.clip_es.cam_names),
                "background_words": list(preset.clip_es.background_words), "max_side": opts.max_side,
                "crf_image": opts.crf_image, "ignore_below": opts.ignore_below}
    if opts.batch_size > 1:  # batched products round differently; one-image batches are plain one-by-one runs
        settings["batches"] = {"size": opts.batch_size, "batching": batching}
    check_run_config(layout.config, settings, write=False, overwrite=opts.overwrite, known_before_loading=True)
    generator = build_generator(preset, opts, options, device)
    check_run_config(layout.config, {
        **settings, "model": generator.clip.name, "random_weights": generator.clip.random_weights,
        "weights": generator.clip.weights_fingerprint, "cam": asdict(generator.model.config)},
        rank.is_main and not verify_only, opts.overwrite, root=layout.root)
    if verify_only:
        return MaskRunSummary()

    summary = MaskRunSummary()
    batches = _plan(entries, generator.clip.patch_size, opts, batching, rank, summary)
    work = _check_existing(batches, layout, generator, opts, summary)
    threads = options.runtime.loader_threads
    crf_inline = opts.crf_masks and options.crf.backend == "torch"  # on the CAMs in memory and the image decoded once
    # each image's files are its own: half as many writers as readers (a write takes about half a read)
    with BackgroundWriter(inline=threads == 0, threads=max(1, threads // 2)) as writer, \
            tqdm(total=sum(len(todo) for _, todo in work), desc="cams", unit="img", disable=not opts.progress) as bar:
        loaded = read_batches_ahead(lambda entry: _load(generator, entry.path, crf_inline),
                                    [batch.entries for batch, _ in work], threads)
        with closing(loaded):
            for (batch, todo), images in zip(work, loaded):
                _compute_batch(generator, layout, writer, batch, todo, images, opts, summary)
                bar.update(len(todo))
    if rank.world_size == 1 and entries and len(summary.failed) == len(entries):  # (ranks: see _plan)
        raise UserError(f"none of the {len(entries)} images could be processed (first: "
                        f"{next(iter(summary.failed.values()))})")
    if opts.crf_masks:  # the images whose CRF mask is still missing (all of them, unless computed inline)
        jobs = [CRFJob(str(e.path), str(layout.cam(e.image_id)), str(layout.crf(e.image_id)), str(layout.root))
                for batch in batches for e in batch.entries if e.image_id not in summary.failed]
        overwrite = opts.overwrite and not crf_inline  # inline masks are this run's
        work = CRFWork(generator.space, options.crf, options.max_pixels)
        crf_result = run_crf_batch(jobs, work, opts.crf_workers, overwrite, opts.progress)
        summary.crf_written += crf_result.written
        for image_id, reason in crf_result.failed.items():
            _record_failure(image_id, UserError(reason), opts, summary)
    return summary


def _plan(entries: Sequence[SplitEntry], patch: int, opts: MaskRunOptions, batching: str, rank: RankInfo,
          summary: MaskRunSummary) -> list[Batch]:
    """This rank's batches. Every rank plans all the images the same way, then takes its share of
    the batches, so that each image is computed in the same company as in one process. Missing
    and unreadable images are failures of the rank whose share of the entries holds them; when
    no image at all can be found or read, every rank stops with the same one-line error (a rank
    can't see the others' later failures, so only one process applies that rule to the run's end)."""
    found, failures = [], []
    for entry in entries:
        try:
            found.append(ImageEntry(entry.image_id, find_image(opts.img_root, entry.image_id),
                                    tuple(entry.labels or ())))
        except UserError as exc:
            failures.append((entry.image_id, exc))
    batches, unreadable = plan_batches(found, patch, opts.max_side, opts.batch_size, opts.strict, batching,
                                       opts.max_pixels)
    failures += [(image_id, UserError(reason)) for image_id, reason in unreadable.items()]
    order = {entry.image_id: index for index, entry in enumerate(entries)}
    if entries and not batches:
        raise UserError(f"none of the {len(entries)} images could be found or read (first: {failures[0][1]})")
    for image_id, exc in failures:
        if order[image_id] % rank.world_size == rank.rank:
            _record_failure(image_id, exc, opts, summary)
    return shard(batches, rank)


def _check_existing(batches: Sequence[Batch], layout: MaskFolder, generator: MaskGenerator, opts: MaskRunOptions,
                    summary: MaskRunSummary) -> list[tuple[Batch, set[str]]]:
    """The batches with images to compute, and those images' ids. An image is done when its CAM
    file holds its tags (its label PNG is rebuilt from them when lost); a missing, unreadable or
    damaged CAM file, or one made for other tags, is computed (again)."""
    work = []
    for batch in tqdm(batches, desc="checking", unit="batch", disable=not opts.progress):
        todo = set()
        for entry in batch.entries:
            cam = layout.cam(entry.image_id)
            if opts.overwrite or read_cam_keys(cam) != list(entry.labels):
                todo.add(entry.image_id)
                continue
            if not layout.mask(entry.image_id).is_file():
                try:
                    keys, cams = read_cams(cam)
                except UserError:
                    todo.add(entry.image_id)
                    continue
                write_label_png(layout.mask(entry.image_id), generator.label_map(cams, keys), layout.root)
            summary.existing += 1
        if todo:
            work.append((batch, todo))
    return work


def _compute_batch(generator: MaskGenerator, layout: MaskFolder, writer: BackgroundWriter, batch: Batch,
                   todo: set[str], images: list, opts: MaskRunOptions, summary: MaskRunSummary) -> None:
    """CAMs of a batch's readable images in one pass, then (the torch CRF backend, the images
    loaded with their RGB pixels) their CRF in one call: all of them, the planned company, so
    that resumed and sharded runs keep the bits. The outputs of the images in ``todo`` are
    written; out of memory fails those images, not the run."""
    ready = [(entry, *image) for entry, image in zip(batch.entries, images) if not isinstance(image, UserError)]
    for entry, image in zip(batch.entries, images):
        if isinstance(image, UserError) and entry.image_id in todo:
            _record_failure(entry.image_id, image, opts, summary)
    if not any(entry.image_id in todo for entry, _, _ in ready):
        return
    try:
        cams = generator.cams_batch([image for _, image, _ in ready], [list(entry.labels) for entry, _, _ in ready])
        cams = [c.astype(np.float16) for c in cams]
        crf_labels: list = [None] * len(ready)
        if ready[0][2] is not None:  # the inline CRF: the batch's images in one call, in the planned company
            crf_labels = crf_label_maps([rgb for _, _, rgb in ready], cams, [list(e.labels) for e, _, _ in ready],
                                        generator.space, generator.options.crf)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        out_of_memory = True
    else:
        out_of_memory = False
    if out_of_memory:  # out of the except block: its traceback no longer holds the batch's tensors
        _free_device_memory(generator)
        for entry, image, _ in ready:
            if entry.image_id in todo:
                _record_failure(entry.image_id, UserError(
                    f"{entry.image_id}: out of memory at {image.tensor.shape[2]}x{image.tensor.shape[1]} in a batch "
                    f"of {len(ready)} (rerun with a lower --batch-size or --max-side into another --out, or "
                    f"with --overwrite: a folder keeps the settings it was made with)"), opts, summary)
        return
    for (entry, _, _), c, labels in zip(ready, cams, crf_labels):
        if entry.image_id in todo:
            with _COUNTS:
                summary.computed += 1
                summary.crf_written += labels is not None
            writer.submit(_write_or_fail, generator.space, layout, entry.image_id, list(entry.labels), c, labels,
                          opts, summary)


def _write_or_fail(space: LabelSpace, layout: MaskFolder, image_id: str, tags: list[int], cams: np.ndarray,
                   crf_labels: np.ndarray | None, opts: MaskRunOptions, summary: MaskRunSummary) -> None:
    """:func:`write_image_outputs` in a writer thread; running out of memory there (the label map
    is made at full size) fails that image, not the run: its CAM file goes, so a rerun computes it."""
    try:
        write_image_outputs(space, layout, image_id, tags, cams, crf_labels)
        return
    except MemoryError:
        pass
    layout.cam(image_id).unlink(missing_ok=True)
    with _COUNTS:
        summary.computed -= 1
        summary.crf_written -= crf_labels is not None
    _record_failure(image_id, UserError(f"{image_id}: out of memory while writing its outputs"), opts, summary)


def _record_failure(image_id: str, error: UserError, opts: MaskRunOptions, summary: MaskRunSummary) -> None:
    if opts.strict:
        raise error
    log.warning("skipped %s: %s", image_id, error)
    summary.failed[image_id] = str(error)


def _free_device_memory(generator: MaskGenerator) -> None:
    if generator.clip.device.type == "cuda":
        torch.cuda.empty_cache()


def _load(generator: MaskGenerator, path: Path,
          with_rgb: bool) -> tuple[PreparedImage, np.ndarray | None] | UserError:
    """The prepared image and (``with_rgb``, for the CRF) its RGB pixels from one decoding, or
    the error that says why it can't be read (returned, not raised)."""
    try:
        if not with_rgb:
            return generator.prepare(path), None
        image = as_pil(path, generator.options.max_pixels)
        return generator.prepare(image), load_rgb(image)
    except UserError as exc:
        return exc
    except MemoryError:  # that image's failure, as an unreadable one (numpy's allocation errors included)
        return UserError(f"{path}: out of memory while decoding the image")


def write_image_outputs(space: LabelSpace, layout: MaskFolder, image_id: str, tags: list[int], cams: np.ndarray,
                        crf_labels: np.ndarray | None) -> None:
    """One image's files: the CAM file, then the label PNG of its float16 CAMs (resuming trusts an
    image whose two files exist), then the CRF mask when it was computed with them; a CRF mask of
    earlier CAMs is stale and goes. The writer threads' whole job, label map included."""
    write_cams(layout.cam(image_id), tags, cams, layout.root)
    write_label_png(layout.mask(image_id), label_map(cams, tags, space), layout.root)  # the stored float16, widened to float32 inside
    if crf_labels is None:
        layout.crf(image_id).unlink(missing_ok=True)
    else:
        write_label_png(layout.crf(image_id), crf_labels, layout.root)
