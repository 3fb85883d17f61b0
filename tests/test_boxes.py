import cv2
import numpy as np
import pytest
import torch

from tagclip_cls.core.boxes import boxed_columns, score_map_box_masks


def reference_box_mask(score_map: np.ndarray, threshold: float) -> np.ndarray:
    """The published scoremap2bbox written out with OpenCV, one map at a time: uint8
    quantisation, strict threshold at int(t * max), external contours, bounding rectangles with
    right/bottom clamped to the last row/column; no contour: the box 0,0,0,0 (empty)."""
    gh, gw = score_map.shape
    q = (score_map * 255).astype(np.uint8)
    binary = (q > int(threshold * q.max())).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    mask = np.zeros((gh, gw), np.float32)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        mask[y:min(y + h, gh - 1), x:min(x + w, gw - 1)] = 1
    return mask


def filled(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A mask with ones in ``[y0:y1, x0:x1]`` of each ``(x0, y0, x1, y1)``."""
    mask = np.zeros(shape, np.float32)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 1
    return mask


def test_box_of_a_blob_with_clamped_edges():
    m = np.zeros((2, 6, 8), dtype=np.float32)
    m[0, 1:3, 2:5] = 1.0  # rows 1-2, cols 2-4
    m[1, 3:, 5:] = 1.0  # touches the bottom-right corner: w=3, h=3 -> clamped to 7 and 5
    masks = score_map_box_masks(m, 0.5)
    assert masks.dtype == np.float32 and masks.shape == (2, 6, 8)
    np.testing.assert_array_equal(masks[0], filled((6, 8), (2, 1, 5, 3)))
    np.testing.assert_array_equal(masks[1], filled((6, 8), (5, 3, 7, 5)))


def test_threshold_is_strictly_greater_on_quantised_values():
    m = np.array([[[0.5, 1.0], [0.2, 0.0]]], dtype=np.float32)
    # quantised: 127, 255, 51, 0; cut = int(0.5 * 255) = 127, so 127 does not pass; the box of
    # the one cell left is x 1..min(2, 1), empty
    assert score_map_box_masks(m, 0.5).sum() == 0
    # cut = int(0.19 * 255) = 48: 127, 255 and 51 pass, one region with box (0, 0, 1, 1)
    np.testing.assert_array_equal(score_map_box_masks(m, 0.19)[0], filled((2, 2), (0, 0, 1, 1)))


def test_threshold_product_in_the_thresholds_precision():
    # quantised peak 97 and one cell of 1: 1/97 * 97 is 1.0 in float64 (cut 1, the cell fails)
    # but 0.99999994 in float32 (cut 0, the cell passes)
    m = np.zeros((1, 4, 5), dtype=np.float32)
    m[0, 0, 0] = 97.5 / 255
    m[0, 1, 2] = 1.5 / 255
    peak_only = filled((4, 5), (0, 0, 1, 1))
    np.testing.assert_array_equal(score_map_box_masks(m, 1 / 97)[0], peak_only)
    both = filled((4, 5), (0, 0, 1, 1), (2, 1, 3, 2))
    np.testing.assert_array_equal(score_map_box_masks(m, np.float32(1 / 97))[0], both)
    np.testing.assert_array_equal(score_map_box_masks(m, np.array([1 / 97], np.float32))[0], both)


def test_no_region_gives_the_empty_mask():
    assert score_map_box_masks(np.zeros((1, 4, 4), dtype=np.float32), 0.5).sum() == 0
    assert score_map_box_masks(np.full((1, 4, 4), np.nan, dtype=np.float32), np.float32(np.nan)).sum() == 0
    assert score_map_box_masks(np.zeros((0, 4, 4), dtype=np.float32), 0.5).shape == (0, 4, 4)


def test_threshold_and_clamped_edges_per_map():
    cam = np.zeros((2, 4, 5), np.float32)
    cam[0, 1:3, 1:3] = 1.0
    cam[0, 0, 4] = 0.3  # below 0.4 * max: no box
    cam[1, 2:4, 3:5] = 1.0  # touches the bottom-right corner: the box stops one short
    masks = score_map_box_masks(cam, 0.4)
    np.testing.assert_array_equal(masks[0], filled((4, 5), (1, 1, 3, 3)))
    np.testing.assert_array_equal(masks[1], filled((4, 5), (3, 2, 4, 3)))


def test_two_blobs_two_boxes():
    m = np.zeros((1, 8, 8), dtype=np.float32)
    m[0, 0:2, 0:2] = 1.0
    m[0, 4:6, 4:7] = 0.9
    mask = score_map_box_masks(m, 0.4)[0]
    np.testing.assert_array_equal(mask, filled((8, 8), (0, 0, 2, 2), (4, 4, 7, 6)))


def test_regions_touching_only_at_a_corner_are_one_region():
    # 8-connectivity, as findContours' outer borders: two cells touching diagonally give one box
    m = np.zeros((1, 5, 5), dtype=np.float32)
    m[0, 1, 1] = m[0, 2, 2] = 1.0
    np.testing.assert_array_equal(score_map_box_masks(m, 0.5)[0], filled((5, 5), (1, 1, 3, 3)))


def test_nested_region_inside_a_ring():
    m = np.zeros((1, 9, 9), dtype=np.float32)
    m[0, 1:8, 1:8] = 1.0
    m[0, 2:7, 2:7] = 0.0  # a ring ...
    m[0, 4, 4] = 1.0  # ... with a region in its hole: findContours' external mode drops it
    np.testing.assert_array_equal(score_map_box_masks(m, 0.5)[0], reference_box_mask(m[0], 0.5))


@pytest.mark.parametrize("kind", ["uniform", "peaked", "smooth", "binary"])
def test_many_maps_at_once_equal_the_published_one_map_boxes(kind):
    """Against findContours one map at a time, on maps of every size from 1 pixel, noisy (many
    regions, holes, regions in holes, diagonal contacts) and smooth, per-map and shared thresholds."""
    rng = np.random.default_rng({"uniform": 0, "peaked": 1, "smooth": 2, "binary": 3}[kind])
    compared = 0
    for trial in range(150):
        k, h, w = (int(v) for v in rng.integers(1, [40, 33, 33]))
        maps = rng.random((k, h, w)).astype(np.float32)
        if kind == "peaked":
            maps = maps ** 6
        elif kind == "smooth" and h > 1 and w > 1:
            maps = np.stack([cv2.GaussianBlur(m, (0, 0), 2) for m in maps])
            maps = (maps - maps.min(axis=(1, 2), keepdims=True)) / (np.ptp(maps, axis=(1, 2), keepdims=True) + 1e-12)
        elif kind == "binary":
            maps = (maps > 0.6).astype(np.float32)
        thresholds = rng.random(k).astype(np.float32) if trial % 2 else float(rng.random())
        masks = score_map_box_masks(maps, thresholds)
        for i in range(k):
            t = thresholds[i] if isinstance(thresholds, np.ndarray) else thresholds
            np.testing.assert_array_equal(masks[i], reference_box_mask(maps[i], t), err_msg=f"trial {trial}, map {i}")
            compared += 1
    assert compared > 2000


def test_boxed_columns_one_product_has_the_same_sums():
    g = torch.Generator().manual_seed(5)
    n, k = 40, 6
    attn, probs = torch.rand(n, n, generator=g), torch.rand(n, k, generator=g)
    keys = (torch.rand(n, k, generator=g) > 0.5).float()
    expected = torch.stack([(attn * keys[:, j][None, :]) @ probs[:, j] for j in range(k)], dim=1)
    for one_product in (False, True):
        out = boxed_columns(attn, probs, keys, one_product=one_product)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(boxed_columns(attn, probs, keys, one_product=False), expected)
    assert boxed_columns(attn, probs[:, :0], keys[:, :0], one_product=False).shape == (n, 0)
