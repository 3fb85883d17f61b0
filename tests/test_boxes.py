import numpy as np

from tagclip_cls.core.boxes import box_mask, score_map_box_mask, score_map_boxes


def test_box_of_a_blob_with_clamped_edges():
    m = np.zeros((6, 8), dtype=np.float32)
    m[1:3, 2:5] = 1.0  # rows 1-2, cols 2-4
    assert score_map_boxes(m, 0.5) == [(2, 1, 5, 3)]
    m2 = np.zeros((6, 8), dtype=np.float32)
    m2[3:, 5:] = 1.0  # touches the bottom-right corner: w=3, h=3 -> clamped to 7 and 5
    assert score_map_boxes(m2, 0.5) == [(5, 3, 7, 5)]


def test_threshold_is_strictly_greater_on_quantised_values():
    m = np.array([[0.5, 1.0], [0.2, 0.0]], dtype=np.float32)
    # quantised: 127, 255, 51, 0; cut = int(0.5 * 255) = 127, so 127 does not pass
    boxes = score_map_boxes(m, 0.5)
    assert boxes == [(1, 0, 1, 1)]  # x1 = min(1 + 1, 2 - 1) = 1


def test_no_contour_gives_the_empty_box():
    assert score_map_boxes(np.zeros((4, 4), dtype=np.float32), 0.5) == [(0, 0, 0, 0)]
    assert box_mask([(0, 0, 0, 0)], (4, 4)).sum() == 0


def test_two_blobs_two_boxes_and_mask():
    m = np.zeros((8, 8), dtype=np.float32)
    m[0:2, 0:2] = 1.0
    m[4:6, 4:7] = 0.9
    boxes = sorted(score_map_boxes(m, 0.4))
    assert boxes == [(0, 0, 2, 2), (4, 4, 7, 6)]
    mask = score_map_box_mask(m, 0.4)
    assert mask.dtype == np.float32 and mask.sum() == 4 + 6
    assert mask[5, 6] == 1 and mask[6, 6] == 0
