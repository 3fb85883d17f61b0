"""The settings of the dense CRF, shared by both backends."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF settings; the defaults are the published ones (CLIP-ES's evaluation)."""

    iterations: int = 10
    gauss_sxy: float = 1.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 67.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 4.0
