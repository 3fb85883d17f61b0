import numpy as np
import pytest

from tagclip_cls.tagging.metrics import average_precision, classification_metrics


def test_average_precision_hand_computed():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert average_precision(scores, np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(scores, np.array([0, 0, 0, 1])) == pytest.approx(0.25)
    assert average_precision(scores, np.array([1, 1, 0, 0])) == 1.0
    assert average_precision(scores, np.zeros(4)) is None


def test_classification_metrics_known_answer():
    scores = np.array([[0.9, 0.1, 0.3], [0.2, 0.8, 0.6], [0.7, 0.4, 0.1]])
    labels = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0]])
    predicted = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0]])
    m = classification_metrics(scores, labels, predicted, ["a", "b", "c"])
    # class a: AP 1; class b: AP 1; class c: positive ranked 1st of (0.3, 0.6, 0.1) -> AP 1
    assert m["mAP"] == pytest.approx(100.0)
    tp, npred, npos = 3, 4, 4
    assert m["precision"] == pytest.approx(100 * tp / npred)
    assert m["recall"] == pytest.approx(100 * tp / npos)
    assert m["F1"] == pytest.approx(75.0)


def test_class_without_positives_is_left_out_of_map():
    scores = np.array([[0.9, 0.5], [0.1, 0.6]])
    labels = np.array([[0, 0], [1, 0]])
    m = classification_metrics(scores, labels, labels, ["a", "b"])
    assert m["per_class_AP"]["b"] is None
    assert m["mAP"] == pytest.approx(50.0)  # class a: positive ranked second
