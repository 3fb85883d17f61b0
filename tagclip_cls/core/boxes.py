"""Boxes around the high part of a score map (the published ``scoremap2bbox``) and box masks."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def score_map_boxes(score_map: np.ndarray, threshold: float | np.floating) -> list[tuple[int, int, int, int]]:
    """Bounding boxes ``(x0, y0, x1, y1)`` of the regions of a ``[0, 1]`` map above a threshold.

    The map is quantised to uint8, binarised at ``int(threshold * max)`` (strictly greater
    passes) and each external contour gives one box. As in the published code, the right and
    bottom edges are clamped to ``width - 1`` and ``height - 1``; with no contour the single box
    is ``(0, 0, 0, 0)``.
    """
    height, width = score_map.shape
    quantised = (score_map * 255).astype(np.uint8)
    # numpy arithmetic on purpose: a float32 threshold gives a float32 product, a Python float a
    # float64 one, exactly as in the published code; ``int`` truncates
    cut = int(threshold * quantised.max())
    _, binary = cv2.threshold(quantised, cut, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return [(0, 0, 0, 0)]
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
    return boxes


def box_mask(boxes: list[tuple[int, int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    """1 inside ``[y0:y1, x0:x1]`` of every box, 0 elsewhere (float32, ``shape``)."""
    mask = np.zeros(shape, dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 1
    return mask


def score_map_box_mask(score_map: torch.Tensor | np.ndarray, threshold: float | np.floating) -> np.ndarray:
    """``box_mask(score_map_boxes(...))`` for a 2-D map given as tensor or array."""
    if isinstance(score_map, torch.Tensor):
        score_map = score_map.detach().float().cpu().numpy()
    return box_mask(score_map_boxes(score_map, threshold), score_map.shape)
