"""wsss.evaluation.results: the one score computation, the results schema, its writer and reader."""
import json
import os

import numpy as np
import pytest

from tagclip_cls.runtime.errors import UserError
from wsss.evaluation.results import (RESULT_KEYS, areas_from_confusion, markdown_table, read_results,
                                     results_record, scores_from_areas, scores_from_confusion, write_results)


def test_classes_without_ground_truth_are_left_out_of_the_means():
    # class "b" has no GT pixels but 4 false-positive pixels: excluded, not counted as 0
    s = scores_from_areas([5, 0, 3], [10, 4, 6], [8, 0, 4], [7, 4, 5], ["a", "b", "c"])
    assert s["per_class"] == {"a": {"IoU": 50.0, "Acc": 62.5, "gt_pixels": 8, "pred_pixels": 7},
                              "b": {"IoU": None, "Acc": None, "gt_pixels": 0, "pred_pixels": 4},
                              "c": {"IoU": 50.0, "Acc": 75.0, "gt_pixels": 4, "pred_pixels": 5}}
    assert s["mIoU"] == 50.0 and s["mAcc"] == 68.75
    assert s["aAcc"] == pytest.approx(100 * 8 / 12, rel=1e-12)  # full precision, not 66.67
    assert s["num_classes_evaluated"] == 2


def test_scores_match_a_direct_computation_on_random_label_maps():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (50, 50))
    pred = np.where(rng.random((50, 50)) < 0.7, gt, rng.integers(0, 5, (50, 50)))
    inter = [np.sum((gt == c) & (pred == c)) for c in range(5)]
    union = [np.sum((gt == c) | (pred == c)) for c in range(5)]
    area = [np.sum(gt == c) for c in range(5)]
    area_pred = [np.sum(pred == c) for c in range(5)]
    s = scores_from_areas(inter, union, area, area_pred, list("abcde"))
    expected = np.mean([inter[c] / union[c] for c in range(4)]) * 100
    assert s["mIoU"] == pytest.approx(expected, rel=1e-12)
    assert s["per_class"]["e"]["IoU"] is None and s["per_class"]["e"]["pred_pixels"] == area_pred[4] > 0
    assert s["aAcc"] == pytest.approx(100 * np.mean(gt == pred), rel=1e-12)


def test_confusion_reduces_to_the_same_areas():
    # rows gt a, b, c; columns pred a, b, c and 255 (wrong for its row, nobody's false positive)
    confusion = np.array([[1, 1, 0, 0], [0, 2, 0, 1], [1, 0, 1, 0]])
    inter, union, gt, pred = areas_from_confusion(confusion)
    assert (inter.tolist(), union.tolist(), gt.tolist(), pred.tolist()) == (
        [1, 2, 1], [3, 4, 2], [2, 3, 2], [2, 3, 1])
    s = scores_from_confusion(confusion, ["a", "b", "c"])
    assert s == scores_from_areas([1, 2, 1], [3, 4, 2], [2, 3, 2], [2, 3, 1], ["a", "b", "c"])
    assert s["aAcc"] == pytest.approx(400 / 7)
    with pytest.raises(ValueError, match="does not fit 2 classes"):
        scores_from_confusion(confusion, ["a", "b"])


def test_inconsistent_areas_are_refused():
    with pytest.raises(ValueError, match="shape"):
        scores_from_areas([1, 2], [1, 2], [1, 2], [1, 2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="union must equal"):
        scores_from_areas([5], [9], [8], [7], ["a"])  # 8 + 7 - 5 = 10
    with pytest.raises(ValueError, match="intersection"):
        scores_from_areas([9], [6], [8], [7], ["a"])


def test_tables_are_written_atomically_with_published_numbers(tmp_path):
    s = scores_from_areas([5, 0], [10, 0], [8, 0], [7, 0], ["background", "cat"])
    rec = results_record(s, split="val", iteration=20000, published=[dict(name="CLIP-ES val", mIoU=71.1)])
    assert list(rec) == list(RESULT_KEYS)
    json_path, md_path = write_results(rec, tmp_path / "out" / "results_val.json")
    assert md_path == tmp_path / "out" / "results_val.md"
    data = json.loads(json_path.read_text())
    assert data == rec == read_results(json_path)
    assert data["mIoU"] == 50.0 and data["iteration"] == 20000 and data["checkpoint"] is None
    assert data["per_class"]["cat"] == {"IoU": None, "Acc": None, "gt_pixels": 0, "pred_pixels": 0}
    assert data["published"] == [{"name": "CLIP-ES val", "mIoU": 71.1}]
    md = md_path.read_text()
    assert "| this run (val, iter 20000) | 50.00 |" in md
    assert "| published: CLIP-ES val | 71.10 |" in md
    assert "| cat | - | - | 0 | 0 |" in md and "| background | 50.00 | 62.50 | 8 | 7 |" in md
    assert md == markdown_table(rec)
    assert sorted(os.listdir(tmp_path / "out")) == ["results_val.json", "results_val.md"]


def test_full_precision_in_json_rounding_only_in_the_table(tmp_path):
    s = scores_from_areas([1, 2], [3, 3], [2, 3], [2, 2], ["a", "b"])  # IoU 1/3 and 2/3
    rec = results_record(s, dataset="voc2012", split="/data/val.txt", num_images=4, missing=["x"],
                         checkpoint="/w/iter_8.pth")
    json_path, md_path = write_results(rec, tmp_path / "r.json")
    data = json.loads(json_path.read_text())
    assert data["per_class"]["a"]["IoU"] == 100 / 3 and data["mIoU"] == 50.0
    assert data["aAcc"] == 300 / 5 and data["mAcc"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2, rel=1e-15)
    md = md_path.read_text()
    assert "| a | 33.33 | 50.00 | 2 | 2 |" in md
    assert "| this run (voc2012, val.txt, iter_8.pth) | 50.00 | 58.33 | 60.00 |" in md
    assert "Means over the 2 classes with ground truth, 4 images, 1 predictions missing (counted as wrong)." in md


def test_no_ground_truth_at_all_gives_null_means(tmp_path):
    s = scores_from_areas([0, 0], [3, 0], [0, 0], [3, 0], ["a", "b"])
    assert (s["mIoU"], s["mAcc"], s["aAcc"], s["num_classes_evaluated"]) == (None, None, None, 0)
    json_path, _ = write_results(results_record(s, split="test"), tmp_path / "r.json")
    assert read_results(json_path)["mIoU"] is None


def _valid(tmp_path):
    rec = results_record(scores_from_areas([5, 0], [10, 0], [8, 0], [7, 0], ["background", "cat"]), split="val")
    return json.loads(json.dumps(rec))


@pytest.mark.parametrize("change, problem", [
    (lambda r: r.update(num_classes_evaluated=2), "'num_classes_evaluated' is 2 but 1 classes"),
    (lambda r: r["per_class"]["cat"].update(IoU=0.0), "null exactly when there are no ground-truth pixels"),
    (lambda r: r["per_class"]["background"].pop("pred_pixels"), "must have exactly the keys"),
    (lambda r: r.update(mIoU=None), "'mIoU' must be a percentage"),
    (lambda r: r.update(aAcc=101), "'aAcc' must be a percentage"),
    (lambda r: r.pop("missing"), "missing keys ['missing']"),
    (lambda r: r.update(published=[{"mIoU": 3}]), "'published' must be a list"),
])
def test_reader_names_the_file_and_the_problem(tmp_path, change, problem):
    rec = _valid(tmp_path)
    change(rec)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(UserError) as err:
        read_results(path)
    assert str(err.value).startswith(f"{path}: not a results file (") and problem in str(err.value)
    with pytest.raises(ValueError, match="not a valid results record"):
        write_results(rec, tmp_path / "again.json")
    assert not (tmp_path / "again.json").exists()


def test_reader_refuses_other_files(tmp_path):
    old = tmp_path / "old.json"  # the former eval_masks.py format
    old.write_text(json.dumps({"miou": 41.5, "classes": [{"name": "a", "iou": 41.5}]}))
    with pytest.raises(UserError, match=r"old\.json: not a results file \(missing keys \["):
        read_results(old)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(UserError, match=r"broken\.json: not a results file \(invalid JSON"):
        read_results(broken)
    with pytest.raises(UserError, match=r"nope\.json: cannot read results file"):
        read_results(tmp_path / "nope.json")
    with pytest.raises(UserError, match=r"r\.md: a results JSON file must not end in \.md"):
        write_results(_valid(tmp_path), tmp_path / "r.md")


def test_tables_stay_inside_their_root(tmp_path):
    """Both tables are refused, before either is written, when one of them (or their folder)
    leads outside the folder they belong to (a stage-3 work dir, ``--out``)."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "results_test.md").write_text("precious")
    (work / "results_test.md").symlink_to(outside / "results_test.md")
    with pytest.raises(UserError, match=r"results_test\.md: would be written outside "):
        write_results(_valid(tmp_path), work / "results_test.json", work)
    assert not (work / "results_test.json").exists() and (outside / "results_test.md").read_text() == "precious"
    (work / "eval").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UserError, match=r"results_val\.json: would be written outside "):
        write_results(_valid(tmp_path), work / "eval" / "results_val.json", work)
    assert sorted(os.listdir(outside)) == ["results_test.md"]
