"""The dense CRF computed by pydensecrf (Krähenbühl and Koltun's C++ code): the reference."""
from __future__ import annotations

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_softmax

from wsss.crf.params import CRFParams


def dense_crf_pydensecrf(image: np.ndarray, prob: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean-field Q (``R x H x W`` float32) of ``DenseCRF2D`` with Potts Gaussian and bilateral
    kernels (diagonal, symmetric normalisation) on ``image`` and the probability stack ``prob``."""
    rows, height, width = prob.shape
    if image.shape[:2] != (height, width):  # pydensecrf would read past or short of the image
        raise ValueError(f"image {image.shape[:2]} and probabilities {prob.shape[1:]} differ in size")
    crf = dcrf.DenseCRF2D(width, height, rows)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
    crf.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.require(image, requirements=["C", "W"]),  # pydensecrf: writable only
                             compat=params.bilateral_compat)
    q = crf.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(rows, height, width)
