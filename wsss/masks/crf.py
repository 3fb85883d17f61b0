"""Stage 2 step 5: dense-CRF post-processing of the CAM label maps (the CRF itself: :mod:`wsss.crf`).

The unary is ``-log(prob)`` of the probability stack (``[bg, cams]``, or just the CAMs for
COCO-Stuff) as given, not renormalised, clipped below at 1e-5 exactly like
``pydensecrf.utils.unary_from_softmax``. Pairwise terms: Gaussian ``sxy=1, compat=3`` and
bilateral ``sxy=67, srgb=3, compat=4``; 10 mean-field iterations; arg-max over Q.

CRF image inputs (``mode``):

* ``published``: the published evaluation's quirk, the BGR image minus the Caffe mean
  (104.008, 116.669, 122.675) cast to uint8. Negative values wrap: on x86-64 numpy's
  float -> uint8 ``astype`` truncates toward zero and keeps the low 8 bits, i.e.
  ``trunc(x) mod 256`` (-0.5 -> 0, -1.7 -> 255, -104.008 -> 152). C leaves that cast undefined
  (ARM saturates to 0), so it is computed here with integer arithmetic, the same on every
  platform and equal to what the published masks were made with.
* ``rgb``: the plain RGB uint8 image (the corrected behaviour).

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

from wsss.masks import CRF_IMAGE_MODES
from wsss.masks.label_maps import LabelSpace, check_cams, first_argmax, probability_stack, rows_to_labels
from tagclip_cls.formats.mask_png import IGNORE, write_label_png
from wsss.crf import CRF_BACKENDS, CRFParams, dense_crf_batch

PR_SET_PDEATHSIG = 1  # linux/prctl.h
PUBLISHED_BGR_MEAN = (104.008, 116.669, 122.675)
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def crf_image(rgb: np.ndarray, mode: str = "published") -> np.ndarray:
    """The ``H x W x 3`` C-contiguous uint8 image the bilateral kernel sees (see module doc)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    if mode == "rgb":
        return np.ascontiguousarray(rgb)
    if mode == "published":
        shifted = rgb[..., ::-1].astype(np.float64) - np.asarray(PUBLISHED_BGR_MEAN)
        return np.ascontiguousarray(np.mod(np.trunc(shifted).astype(np.int64), 256).astype(np.uint8))
    raise ValueError(f"unknown CRF image mode {mode!r}; choose one of {', '.join(CRF_IMAGE_MODES)}")


def crf_rows(rgb: np.ndarray, prob: np.ndarray, mode: str = "published", threshold: float | None = None,
             params: CRFParams = CRFParams(), backend: str = "pydensecrf", device: str | None = None) -> np.ndarray:
    """Row index (into ``prob``) per pixel after the CRF, uint8; 255 where ``max Q < threshold``."""
    return crf_rows_batch([rgb], [prob], mode, threshold, params, backend, device)[0]


def crf_rows_batch(rgbs: Sequence[np.ndarray], probs: Sequence[np.ndarray], mode: str = "published",
                   threshold: float | None = None, params: CRFParams = CRFParams(), backend: str = "pydensecrf",
                   device: str | None = None) -> list[np.ndarray]:
    """:func:`crf_rows` of several images, the CRF in one :func:`~wsss.crf.dense_crf_batch` call
    (the torch backend: one lattice, a few large operations instead of many small ones per image).
    A stack of no rows is all 255, one of a single row all 0 (nothing to decide)."""
    probs = [np.asarray(prob, dtype=np.float32) for prob in probs]
    rows = [np.full(prob.shape[1:], IGNORE if prob.shape[0] == 0 else 0, dtype=np.uint8) for prob in probs]
    chosen = [i for i, prob in enumerate(probs) if prob.shape[0] > 1]
    qs = dense_crf_batch([crf_image(rgbs[i], mode) for i in chosen], [probs[i] for i in chosen], params,
                         backend=backend, device=device)
    for i, q in zip(chosen, qs):
        rows[i] = first_argmax(q)
        if threshold is not None:
            rows[i][q.max(axis=0) < threshold] = IGNORE
    return rows


def crf_label_map(rgb: np.ndarray, cams: np.ndarray, keys: Sequence[int], space: LabelSpace,
                  mode: str = "published", threshold: float | None = None, params: CRFParams = CRFParams(),
                  backend: str = "pydensecrf", device: str | None = None) -> np.ndarray:
    """CRF-refined label map (uint8 ``H x W``: label values of ``space``, 255 = below threshold)."""
    return crf_label_maps([rgb], [cams], [keys], space, mode, threshold, params, backend, device)[0]


def crf_label_maps(rgbs: Sequence[np.ndarray], cams: Sequence[np.ndarray], keys: Sequence[Sequence[int]],
                   space: LabelSpace, mode: str = "published", threshold: float | None = None,
                   params: CRFParams = CRFParams(), backend: str = "pydensecrf", device: str | None = None
                   ) -> list[np.ndarray]:
    """:func:`crf_label_map` of several images, the CRF in one call (:func:`crf_rows_batch`)."""
    probs = [probability_stack(check_cams(c, k), space) for c, k in zip(cams, keys)]
    rows = crf_rows_batch(rgbs, probs, mode, threshold, params, backend, device)
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
class CRFSettings:
    """Everything a worker needs besides the job (picklable)."""

    space: LabelSpace
    mode: str = "published"
    threshold: float | None = None
    params: CRFParams = field(default_factory=CRFParams)
    backend: str = "pydensecrf"
    device: str | None = None  # torch backend
    max_pixels: int = DEFAULT_MAX_PIXELS  # image files with more pixels are refused from their header


@dataclass
class CRFBatchResult:
    written: int = 0
    skipped: int = 0  # outputs that already existed
    failed: dict[str, str] = field(default_factory=dict)  # image id (the output's name) -> reason


def run_crf_job_or_fail(job: CRFJob, settings: CRFSettings, overwrite: bool = False) -> bool | str:
    """:func:`run_crf_job`, or the reason it failed when it ran out of memory (that image's
    failure, not the run's: the CRF works at the image's full size)."""
    try:
        return run_crf_job(job, settings, overwrite)
    except MemoryError:
        pass
    return f"{job.image_path}: out of memory in the CRF"


def run_crf_job(job: CRFJob, settings: CRFSettings, overwrite: bool = False) -> bool:
    """CRF one image and write its palette PNG; False when the output exists and is kept."""
    if not overwrite and Path(job.out_path).exists():
        return False
    keys, cams = read_cams(job.cam_path, len(settings.space.class_to_label))
    rgb = load_rgb(as_pil(job.image_path, settings.max_pixels))
    if tuple(cams.shape[1:]) != rgb.shape[:2]:
        raise UserError(f"{job.cam_path}: CAM size {cams.shape[2]}x{cams.shape[1]} differs from image "
                        f"{job.image_path} ({rgb.shape[1]}x{rgb.shape[0]})")
    labels = crf_label_map(rgb, cams, keys, settings.space, settings.mode, settings.threshold, settings.params,
                           settings.backend, settings.device)
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


def run_crf_batch(jobs: Sequence[CRFJob], settings: CRFSettings, workers: int = 0,
                  overwrite: bool = False, progress: bool = True) -> CRFBatchResult:
    """CRF many images; ``workers`` 0 or 1 runs inline, more uses a spawned process pool (the
    torch backend always runs inline: it uses the cores, or the GPU, itself).

    Existing outputs are skipped unless ``overwrite`` (resumable). An image that runs out of
    memory is listed in the result's ``failed``; any other failing job's error is raised after
    the pool shuts down.
    """
    if settings.mode not in CRF_IMAGE_MODES:
        raise UserError(f"unknown CRF image mode {settings.mode!r}; choose one of {', '.join(CRF_IMAGE_MODES)}")
    if settings.backend not in CRF_BACKENDS:
        raise UserError(f"unknown CRF backend {settings.backend!r}; choose one of {', '.join(CRF_BACKENDS)}")
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
        if workers <= 1 or settings.backend == "torch":
            for job in jobs:
                count(run_crf_job_or_fail(job, settings, overwrite), job)
            return result
        with single_threaded_children(), ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_parent) as pool:
            futures = {pool.submit(run_crf_job_or_fail, job, settings, overwrite): job for job in jobs}
            try:
                for future in as_completed(futures):
                    count(future.result(), futures[future])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return result
