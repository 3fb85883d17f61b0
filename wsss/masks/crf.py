"""Stage 2 step 5: label maps refined by the dense CRF (the CRF solver itself: the package :mod:`wsss.crf`).

Names: :class:`~wsss.crf.CRFParams` are the CRF's kernels and iterations; :class:`CRFSettings`
everything a refinement takes (those params, the colour input's ``image_mode``, ``ignore_below``,
the solver ``backend`` and its ``device``); :func:`~wsss.crf.bilateral_image` makes that colour input; the
refined label maps are written to ``masks_crf/`` (``MaskRunOptions.crf_masks``).

The unary is ``-log(prob)`` of the probability stack (``[bg, cams]``, or just the CAMs for
COCO-Stuff) as given, not renormalised, clipped below at 1e-5 exactly like
``pydensecrf.utils.unary_from_softmax``. Pairwise terms: Gaussian ``sxy=1, compat=3`` and
bilateral ``sxy=67, srgb=3, compat=4``; 10 mean-field iterations; arg-max over Q.

CRF image inputs (``image_mode``): :mod:`wsss.crf.image` (``published`` or ``rgb``).

Many images run in a process pool (``run_crf_batch``, pydensecrf backend); workers are spawned
with OMP/BLAS thread counts set to 1. The torch backend runs in the calling process.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from tagclip_cls.core.images import DEFAULT_MAX_PIXELS, as_pil, load_rgb
from tagclip_cls.formats.mask_folder import read_cams
from tagclip_cls.runtime.errors import UserError

from wsss.masks.label_maps import LabelSpace, check_cams, first_argmax, probability_stack, rows_to_labels
from tagclip_cls.formats.mask_png import IGNORE, write_label_png
from wsss.crf import CRF_BACKENDS, CRF_IMAGE_MODES, CRFParams, bilateral_image, dense_crf_batch

PR_SET_PDEATHSIG = 1  # linux/prctl.h
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class CRFSettings:
    """How the dense CRF refines a label map, in one object; the defaults are CLIP-ES's published
    evaluation. Stage 2 resolves it from ``--crf-image``, ``--ignore-below`` and ``--crf-backend``
    (``wsss.masks.api.MaskChoices``)."""

    params: CRFParams = CRFParams()  # the kernels and the iterations (wsss.crf.params)
    image_mode: str = "published"  # the bilateral kernel's colour input: CRF_IMAGE_MODES, see bilateral_image
    ignore_below: float | None = None  # pixels whose largest Q is below this become 255 (None: none)
    backend: str = "pydensecrf"  # the solver: wsss.crf.CRF_BACKENDS
    device: str | None = None  # where the torch backend runs (None: cpu)

    def __post_init__(self) -> None:
        if self.image_mode not in CRF_IMAGE_MODES:
            raise UserError(f"--crf-image {self.image_mode!r}: choose one of {', '.join(CRF_IMAGE_MODES)}")
        if self.backend not in CRF_BACKENDS:
            raise UserError(f"--crf-backend {self.backend!r}: choose one of {', '.join(CRF_BACKENDS)}")
        if self.ignore_below is not None and not 0.0 < self.ignore_below <= 1.0:
            raise UserError("--ignore-below must lie in (0, 1]")


def crf_rows(rgb: np.ndarray, prob: np.ndarray, settings: CRFSettings = CRFSettings()) -> np.ndarray:
    """Row index (into ``prob``) per pixel after the CRF, uint8; 255 where ``max Q < settings.ignore_below``."""
    return crf_rows_batch([rgb], [prob], settings)[0]


def crf_rows_batch(rgbs: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                   settings: CRFSettings = CRFSettings()) -> list[np.ndarray]:
    """:func:`crf_rows` of several images, the CRF in one :func:`~wsss.crf.dense_crf_batch` call
    (the torch backend: one lattice, a few large operations instead of many small ones per image).
    A stack of no rows is all 255, one of a single row all 0 (nothing to decide)."""
    probs = [np.asarray(prob, dtype=np.float32) for prob in probs]
    rows = [np.full(prob.shape[1:], IGNORE if prob.shape[0] == 0 else 0, dtype=np.uint8) for prob in probs]
    chosen = [i for i, prob in enumerate(probs) if prob.shape[0] > 1]
    qs = dense_crf_batch([bilateral_image(rgbs[i], settings.image_mode) for i in chosen], [probs[i] for i in chosen],
                         settings.params, backend=settings.backend, device=settings.device)
    for i, q in zip(chosen, qs):
        rows[i] = first_argmax(q)
        if settings.ignore_below is not None:
            rows[i][q.max(axis=0) < settings.ignore_below] = IGNORE
    return rows


def crf_label_map(rgb: np.ndarray, cams: np.ndarray, keys: Sequence[int], space: LabelSpace,
                  settings: CRFSettings = CRFSettings()) -> np.ndarray:
    """CRF-refined label map (uint8 ``H x W``: label values of ``space``, 255 = below ``settings.ignore_below``)."""
    return crf_label_maps([rgb], [cams], [keys], space, settings)[0]


def crf_label_maps(rgbs: Sequence[np.ndarray], cams: Sequence[np.ndarray], keys: Sequence[Sequence[int]],
                   space: LabelSpace, settings: CRFSettings = CRFSettings()) -> list[np.ndarray]:
    """:func:`crf_label_map` of several images, the CRF in one call (:func:`crf_rows_batch`)."""
    probs = [probability_stack(check_cams(c, k), space) for c, k in zip(cams, keys)]
    rows = crf_rows_batch(rgbs, probs, settings)
    return [rows_to_labels(r, k, space) for r, k in zip(rows, keys)]


@dataclass(frozen=True)
class CRFJob:
    """One image: where its pixels and CAMs are, where its label PNG goes and the output folder
    that must hold it (default: the PNG's own folder)."""

    image_path: str
    cam_path: str
    out_path: str
    out_root: str | None = None


@dataclass(frozen=True)
class CRFWork:
    """What every job of a run shares (picklable, for the worker processes)."""

    space: LabelSpace
    settings: CRFSettings = CRFSettings()
    max_pixels: int = DEFAULT_MAX_PIXELS  # image files with more pixels are refused from their header


@dataclass
class CRFBatchResult:
    written: int = 0
    skipped: int = 0  # outputs that already existed
    failed: dict[str, str] = field(default_factory=dict)  # image id (the output's name) -> reason


def run_crf_job_or_fail(job: CRFJob, work: CRFWork, overwrite: bool = False) -> bool | str:
    """:func:`run_crf_job`, or the reason it failed when it ran out of memory (that image's
    failure, not the run's: the CRF works at the image's full size)."""
    try:
        return run_crf_job(job, work, overwrite)
    except MemoryError:
        pass
    return f"{job.image_path}: out of memory in the CRF"


def run_crf_job(job: CRFJob, work: CRFWork, overwrite: bool = False) -> bool:
    """CRF one image and write its palette PNG; False when the output exists and is kept."""
    if not overwrite and Path(job.out_path).exists():
        return False
    keys, cams = read_cams(job.cam_path, len(work.space.class_to_label))
    rgb = load_rgb(as_pil(job.image_path, work.max_pixels))
    if tuple(cams.shape[1:]) != rgb.shape[:2]:
        raise UserError(f"{job.cam_path}: CAM size {cams.shape[2]}x{cams.shape[1]} differs from image "
                        f"{job.image_path} ({rgb.shape[1]}x{rgb.shape[0]})")
    labels = crf_label_map(rgb, cams, keys, work.space, work.settings)
    write_label_png(job.out_path, labels, job.out_root)
    return True


def _die_with_parent() -> None:
    """Pool initializer: on Linux, ask the kernel to kill this worker when its parent dies, so a
    SIGKILLed run leaves no orphaned workers behind (elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the call above: nobody to work for
        os._exit(1)


@contextlib.contextmanager
def single_threaded_children() -> Iterator[None]:
    """Set the thread-count variables to 1 while workers are spawned (they inherit them)."""
    saved = {name: os.environ.get(name) for name in _THREAD_ENV}
    os.environ.update({name: "1" for name in _THREAD_ENV})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_crf_batch(jobs: Sequence[CRFJob], work: CRFWork, workers: int = 0,
                  overwrite: bool = False, progress: bool = True) -> CRFBatchResult:
    """CRF many images; ``workers`` 0 or 1 runs inline, more uses a spawned process pool (the
    torch backend always runs inline: it uses the cores, or the GPU, itself).

    Existing outputs are skipped unless ``overwrite`` (resumable). An image that runs out of
    memory is listed in the result's ``failed``; any other failing job's error is raised after
    the pool shuts down.
    """
    result = CRFBatchResult()
    bar = tqdm(total=len(jobs), desc="crf", unit="img", disable=not progress)

    def count(written: bool | str, job: CRFJob) -> None:
        if isinstance(written, str):
            result.failed[Path(job.out_path).stem] = written
        elif written:
            result.written += 1
        else:
            result.skipped += 1
        bar.update()

    with bar:
        if workers <= 1 or work.settings.backend == "torch":
            for job in jobs:
                count(run_crf_job_or_fail(job, work, overwrite), job)
            return result
        with single_threaded_children(), ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_parent) as pool:
            futures = {pool.submit(run_crf_job_or_fail, job, work, overwrite): job for job in jobs}
            try:
                for future in as_completed(futures):
                    count(future.result(), futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return result
