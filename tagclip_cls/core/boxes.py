"""Box masks around the high parts of score maps (the published ``scoremap2bbox``, then the boxes
filled), and the box-masked propagation both stages apply with them."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def score_map_box_masks(score_maps: np.ndarray, thresholds: float | np.floating | np.ndarray) -> np.ndarray:
    """The box masks (``K x h x w`` float32, 1 inside any box) of ``K`` score maps in ``[0, 1]``.

    As the published code does for each map: quantise to uint8, binarise at
    ``int(threshold * max)`` (strictly greater passes), take the bounding box of every region
    and clamp its right and bottom edges to ``width - 1`` and ``height - 1`` (so a region on the
    last row or column loses it); no region gives the empty box. ``thresholds``: one for all
    maps or one per map; the product with the quantised maximum is computed in the thresholds'
    own precision, as published (a float32 threshold gives a float32 product, a Python float a
    float64 one). A NaN map (the min-max scaling of a constant one) has no region.

    The published code boxes the external contours of ``cv2.findContours``. Those are the outer
    borders of the 8-connected regions; a region inside another's hole has its box inside the
    other's box, so the union is the same. All maps are therefore labelled in one
    ``cv2.connectedComponentsWithStats`` call, stacked with a blank row between them: per-map
    Python and OpenCV calls are what limits stage 1 on a GPU.
    """
    maps = np.asarray(score_maps)
    count, height, width = maps.shape
    masks = np.zeros((count, height, width), dtype=np.float32)
    if count == 0 or height == 0 or width == 0:
        return masks
    quantised = (np.nan_to_num(maps, nan=0.0) * 255).astype(np.uint8)
    peaks = quantised.reshape(count, -1).max(axis=1)
    cuts = np.nan_to_num(np.broadcast_to(np.asarray(thresholds), (count,)) * peaks).astype(np.int64)
    stacked = np.zeros((count, height + 1, width), dtype=np.uint8)
    stacked[:, :height] = quantised > cuts[:, None, None]
    _, _, stats, _ = cv2.connectedComponentsWithStats(stacked.reshape(-1, width), connectivity=8)
    x0, y0 = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]  # label 0: the background
    index, y0 = np.divmod(y0, height + 1)
    x1 = np.minimum(x0 + stats[1:, cv2.CC_STAT_WIDTH], width - 1)
    y1 = np.minimum(y0 + stats[1:, cv2.CC_STAT_HEIGHT], height - 1)
    keep = (x1 > x0) & (y1 > y0)
    for i, left, top, right, bottom in zip(*(a[keep].tolist() for a in (index, x0, y0, x1, y1))):
        masks[i, top:bottom, left:right] = 1
    return masks


def boxed_columns(attn: torch.Tensor, probs: torch.Tensor, keys: torch.Tensor, one_product: bool) -> torch.Tensor:
    """``(A * m_c[None, :]) @ P[:, c]`` for every column ``c`` of ``probs`` and ``keys`` (``N x K``):
    the propagation of each score map by an affinity ``A`` restricted to the keys inside its boxes
    (stage 1's DMAR, stage 2's CLIP-ES refinement).

    One column at a time, as both published codes compute it, unless ``one_product``: then
    ``A @ (M * P)``, the same sums in one matrix product but with other roundings, which the
    box thresholds of float32 checkpoints turn into score differences of up to 1e-3. Both
    stages take the one product on a GPU, where a few kernel launches per column would bound
    the throughput and the roundings differ from the published CPU bits anyway.
    """
    if one_product:
        return attn @ (keys * probs)
    columns = [(attn * keys[None, :, j]) @ probs[:, j:j + 1] for j in range(keys.shape[1])]
    return torch.cat(columns, dim=1) if columns else probs.clone()
