import numpy as np
import pytest

from tagclip_cls.core.presets import load_preset
from wsss.masks.label_maps import LabelSpace, first_argmax, label_map, probability_stack, rows_to_labels

VOC = LabelSpace.from_preset(load_preset("voc2012"))
STUFF = LabelSpace.from_preset(load_preset("cocostuff"))


def test_label_spaces_from_presets():
    assert VOC.has_background and VOC.num_labels == 21 and VOC.class_to_label[14] == 15
    assert not STUFF.has_background and STUFF.num_labels == 27 and len(STUFF.class_to_label) == 171


def test_background_rule_and_class_plus_one():
    # two tags (cat = 7, person = 14), three pixels
    cams = np.array([[[0.9, 0.2, 0.3]],
                     [[0.1, 0.7, 0.4]]], dtype=np.float32)
    # background = 1 - max: [0.1, 0.3, 0.6] -> pixel 0 cat, pixel 1 person, pixel 2 background
    assert label_map(cams, [7, 14], VOC).tolist() == [[8, 15, 0]]
    # squared background [0.01, 0.09, 0.36] < 0.4 at pixel 2 -> person


def test_probability_stack_is_not_renormalised():
    cams = np.array([[[0.2, 0.5]], [[0.1, 0.5]]], dtype=np.float32)
    prob = probability_stack(cams, VOC)
    np.testing.assert_allclose(prob[:, 0, :], [[0.8, 0.5], [0.2, 0.5], [0.1, 0.5]], rtol=1e-6)
    assert prob.dtype == np.float32
    assert probability_stack(cams, STUFF).shape == (2, 1, 2)


def test_ties_go_to_background_then_first_tag():
    cams = np.array([[[0.5, 0.6]], [[0.5, 0.6]]], dtype=np.float32)  # bg = [0.5, 0.4]
    assert label_map(cams, [0, 1], VOC).tolist() == [[0, 1]]


def test_no_tags():
    assert label_map(np.zeros((0, 2, 2)), [], VOC).tolist() == [[0, 0], [0, 0]]
    assert label_map(np.zeros((0, 2, 2)), [], STUFF).tolist() == [[255, 255], [255, 255]]


def test_cocostuff_maps_to_coarse27():
    stuff = load_preset("cocostuff").classes
    keys = [stuff.index("person"), stuff.index("bicycle"), stuff.index("sky-other"), stuff.index("sea")]
    cams = np.zeros((4, 1, 4), dtype=np.float32)
    for i in range(4):
        cams[i, 0, i] = 0.9
    # person -> 9, bicycle -> 11 (vehicle), sky-other -> 23 (sky), sea -> 26 (water); no background
    assert label_map(cams, keys, STUFF).tolist() == [[9, 11, 23, 26]]
    low = cams * 0.01  # tiny CAMs still win: there is no background row
    assert label_map(low, keys, STUFF).tolist() == [[9, 11, 23, 26]]


def test_rows_to_labels_keeps_ignore():
    rows = np.array([[0, 1, 2, 255]])
    assert rows_to_labels(rows, [4, 19], VOC).tolist() == [[0, 5, 20, 255]]


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        label_map(np.zeros((2, 3, 3)), [1], VOC)


def test_more_classes_than_uint8_labels_are_refused():
    from tagclip_cls.core.presets import make_preset
    from tagclip_cls.runtime.errors import UserError

    assert LabelSpace.from_preset(make_preset(classes=[f"c{i}" for i in range(254)])).num_labels == 255
    with pytest.raises(UserError, match="at most 254 classes"):
        LabelSpace.from_preset(make_preset(classes=[f"c{i}" for i in range(255)]))


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 255])
def test_first_argmax_equals_numpy_argmax(rows):
    """Against numpy's own arg-max: random values, many ties (small integers), NaNs, float16."""
    rng = np.random.default_rng(rows)
    cases = [rng.random((rows, 37, 23), dtype=np.float32),
             rng.integers(0, 3, (rows, 37, 23)).astype(np.float32),  # ties everywhere: the first row wins
             rng.random((rows, 5, 4)).astype(np.float16)]
    with_nan = rng.random((rows, 37, 23), dtype=np.float32)
    with_nan[rng.random(with_nan.shape) < 0.05] = np.nan
    cases.append(with_nan)
    for stack in cases:
        got = first_argmax(stack)
        assert got.dtype == np.uint8 and np.array_equal(got, stack.argmax(axis=0))
    assert first_argmax(np.zeros((rows, 0, 3), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match="uint8"):
        first_argmax(np.zeros((256, 2, 2), np.float32))
