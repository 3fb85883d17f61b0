"""Stage 3 scoring and result tables (no mmseg needed)."""
import json
import os

import numpy as np
import pytest

from wsss.seg.evaluation import markdown_table, results_dict, scores_from_areas, write_results


def test_classes_without_ground_truth_are_left_out_of_the_means():
    # class "b" has no GT pixels but 4 false-positive pixels: excluded, not counted as 0
    s = scores_from_areas([5, 0, 3], [10, 4, 6], [8, 0, 4], ["a", "b", "c"])
    assert s.iou == (50.0, None, 50.0)
    assert s.acc == (62.5, None, 75.0)
    assert s.miou == 50.0 and s.macc == 68.75
    assert s.aacc == pytest.approx(100 * 8 / 12, abs=0.01)
    assert s.num_evaluated == 2


def test_scores_match_a_direct_computation_on_random_label_maps():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (50, 50))
    pred = np.where(rng.random((50, 50)) < 0.7, gt, rng.integers(0, 5, (50, 50)))
    inter = [np.sum((gt == c) & (pred == c)) for c in range(5)]
    union = [np.sum((gt == c) | (pred == c)) for c in range(5)]
    area = [np.sum(gt == c) for c in range(5)]
    s = scores_from_areas(inter, union, area, list("abcde"))
    expected = np.mean([inter[c] / union[c] for c in range(4)]) * 100
    assert s.miou == pytest.approx(expected, abs=0.01)
    assert s.iou[4] is None
    assert s.aacc == pytest.approx(100 * np.mean(gt == pred), abs=0.01)


def test_area_arrays_must_match_the_class_list():
    with pytest.raises(ValueError, match="shape"):
        scores_from_areas([1, 2], [1, 2], [1, 2], ["a", "b", "c"])


def test_tables_are_written_atomically_with_published_numbers(tmp_path):
    s = scores_from_areas([5, 0], [10, 0], [8, 0], ["background", "cat"])
    rec = results_dict(s, split="val", iteration=20000,
                       reference=[dict(name="CLIP-ES val", mIoU=71.1)])
    json_path, md_path = write_results(rec, tmp_path / "out", "results_val")
    data = json.loads(json_path.read_text())
    assert data["mIoU"] == 50.0 and data["iteration"] == 20000
    assert data["per_class"]["cat"] == {"IoU": None, "Acc": None, "gt_pixels": 0}
    assert data["published"] == [{"name": "CLIP-ES val", "mIoU": 71.1}]
    md = md_path.read_text()
    assert "| this run (val, iter 20000) | 50.00 |" in md
    assert "| published: CLIP-ES val | 71.10 |" in md
    assert "| cat | - | - | 0 |" in md
    assert md == markdown_table(rec)
    assert sorted(os.listdir(tmp_path / "out")) == ["results_val.json", "results_val.md"]


def test_no_ground_truth_at_all_gives_null_means(tmp_path):
    s = scores_from_areas([0, 0], [3, 0], [0, 0], ["a", "b"])
    assert (s.miou, s.macc, s.aacc) == (None, None, None)
    json_path, _ = write_results(results_dict(s, split="test"), tmp_path, "r")
    assert json.loads(json_path.read_text())["mIoU"] is None
