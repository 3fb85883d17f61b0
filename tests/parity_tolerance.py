"""How far stage-1 scores and stage-2 results may lie from the parity fixtures on another CPU kind.

**Scores.** A score is a softmax of ``exp(logit_scale) * cosine``: a cosine that differs by a few
float32 ulps (of 1) moves the logits by that times the logit scale, and the probabilities by at
most as much. So the tolerance is ``SCORE_ULPS * eps32 * exp(logit_scale)``: 9.5e-5 at OpenAI's
scale of 100, 1.4e-5 at 14.3.

**CAMs.** A refined CAM is min-max scaled last: ``(r - min r) / range r``. The float32
arithmetic before it (twelve layers, a gradient, Sinkhorn, ``T @ T``) leaves an absolute error of
a few ulps of ``max |r|`` that depends on the CPU's kernels, and the scaling divides that error by
the range. So the error after scaling grows as ``max |r| / range r``, the inverse of the CAM's
*relative range*, and so does the tolerance: ``CAM_FLOOR + CAM_ULPS * eps32 / relative range``.

**Label maps** are compared pixel for pixel. A pixel may change its label only where the
fixture's two best rows (``[1 - max cam, cams]``, from float16 CAMs as stored) lie closer than the
CAMs may move: twice the CAM tolerance plus float16 rounding. Every changed pixel must be such a
near tie, and they must be few (:data:`MAX_CHANGED_FRACTION`).

The constants are set from the spread that ``benchmarks/parity_spread.py`` measured
(docs/verification.md); each constant's docstring gives the figure and the margin.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

import wsss.masks.cams as cams_module
from wsss.masks.label_maps import LabelSpace, probability_stack

EPS32 = float(np.finfo(np.float32).eps)
#: float32 ulps of a cosine, times the logit scale: measured at most 3.3 (3.97e-5 at scale 100,
#: fp16-valued weights, COCO-Stuff, ATEN_CPU_CAPABILITY=default on an AMD EPYC; 1.3e-6 with its
#: vector kernels); 8 is a margin of 2.4
SCORE_ULPS = 8.0
#: A CAM whose range is not small: CAMs of relative range above 1e-2 differed by at most 6e-5
#: across every setting measured; 1e-4 is the tolerance the fixtures were first checked to.
CAM_FLOOR = 1e-4
#: float32 ulps of ``max |r|`` that the arithmetic before the scaling may differ by: measured at
#: most 3.63 (AMD EPYC with AVX-512, ATEN_CPU_CAPABILITY=default; 3.15 with its AVX-512 kernels,
#: 2.93 with AVX2, the same with 1 thread); 8 is a margin of 2.2
CAM_ULPS = 8.0
#: float16 rounding of a CAM value in [0, 1]: half an ulp at most 2**-12, counted twice for safety
FP16_ROUNDING = 2.0 ** -11
#: changed label pixels per image: at most 0.31% measured (``c_big``, 70 x 90, on the AMD EPYC,
#: every setting between 0.16% and 0.31%); 0.6% is a margin of 1.9
MAX_CHANGED_FRACTION = 0.006


def score_tolerance(logit_scale: float) -> float:
    """The largest stage-1 score difference allowed at ``exp(logit_scale)`` (see the module docstring)."""
    return SCORE_ULPS * EPS32 * logit_scale


def cam_tolerance(relative_ranges: Sequence[float]) -> np.ndarray:
    """The largest difference allowed to each CAM, given its relative range before scaling."""
    return CAM_FLOOR + CAM_ULPS * EPS32 / np.asarray(relative_ranges, dtype=np.float64)


def near_ties(fixture_cams: np.ndarray, space: LabelSpace, cam_tol: float) -> np.ndarray:
    """Pixels whose label may change when every CAM moves by up to ``cam_tol``: the fixture's
    two best rows lie within twice that plus float16 rounding."""
    rows = probability_stack(fixture_cams.astype(np.float16), space).astype(np.float64)
    if rows.shape[0] < 2:
        return np.zeros(rows.shape[1:], dtype=bool)
    top = np.sort(rows, axis=0)
    return top[-1] - top[-2] <= 2 * (cam_tol + FP16_ROUNDING)


def changed_label_pixels(labels: np.ndarray, expected: np.ndarray, fixture_cams: np.ndarray, space: LabelSpace,
                         cam_tol: float) -> tuple[int, int]:
    """How many pixels differ from the fixture's label map, and how many of them are not near ties."""
    changed = labels != expected
    return int(changed.sum()), int((changed & ~near_ties(fixture_cams, space, cam_tol)).sum())


class RefinedRanges:
    """Within ``with``: records, per refined CAM in computation order, ``range r / max |r|``
    before the final min-max scaling (``relative``; 1 for an all-zero map, which scales exactly)."""

    def __init__(self) -> None:
        self.relative: list[float] = []
        self._original = cams_module.refine_with_affinity

    def _recording(self, trans: torch.Tensor, cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        refined = self._original(trans, cams, masks)
        values = refined.detach().double()
        spread = values.max(dim=1).values - values.min(dim=1).values
        scale = values.abs().max(dim=1).values
        self.relative += torch.where(scale > 0, spread / scale.clamp_min(1e-300), 1.0).tolist()
        return refined

    def __enter__(self) -> "RefinedRanges":
        cams_module.refine_with_affinity = self._recording
        return self

    def __exit__(self, *exc) -> None:
        cams_module.refine_with_affinity = self._original
