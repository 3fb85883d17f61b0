import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.presets import coarse27_names, load_preset
from wsss.evaluation.miou import confusion_matrix, eval_class_names, evaluate_dirs, format_table
from wsss.evaluation.results import read_results, scores_from_confusion
from tagclip_cls.formats.mask_png import write_label_png

ROOT = Path(__file__).resolve().parent.parent
GT = np.array([[0, 0, 1, 1], [1, 255, 2, 2]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [255, 0, 2, 0]], np.uint8)


def test_confusion_by_hand():
    conf = confusion_matrix(PRED, GT, 3)
    # rows gt, columns pred 0,1,2 and "255"; the gt-255 pixel is skipped
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 1], [1, 0, 1, 0]]


def test_metrics_by_hand():
    m = scores_from_confusion(confusion_matrix(PRED, GT, 3), ["a", "b", "c"])
    # IoU: a 1/(2+2-1), b 2/(3+3-2), c 1/(2+1-1); pred-255 counts against b but is nobody's FP
    assert [row["IoU"] for row in m["per_class"].values()] == pytest.approx([100 / 3, 50, 50])
    assert [row["Acc"] for row in m["per_class"].values()] == pytest.approx([50, 200 / 3, 50])
    assert [row["gt_pixels"] for row in m["per_class"].values()] == [2, 3, 2]
    assert [row["pred_pixels"] for row in m["per_class"].values()] == [2, 3, 1]
    assert m["mIoU"] == pytest.approx(400 / 9)
    assert m["aAcc"] == pytest.approx(400 / 7)
    assert m["mAcc"] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert m["num_classes_evaluated"] == 3


def test_class_without_gt_is_null_and_left_out():
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 2, 1, 1]], np.uint8)
    m = scores_from_confusion(confusion_matrix(pred, gt, 3), ["a", "b", "c"])
    assert m["per_class"]["c"] == {"IoU": None, "Acc": None, "gt_pixels": 0, "pred_pixels": 1}
    assert m["mIoU"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert m["num_classes_evaluated"] == 2


def test_out_of_range_labels_rejected():
    with pytest.raises(ValueError, match="prediction holds label 7"):
        confusion_matrix(np.array([[7]], np.uint8), np.array([[0]], np.uint8), 3)


def test_class_lists():
    assert len(eval_class_names("voc2012")) == 21 and eval_class_names("voc2012")[0] == "background"
    assert len(eval_class_names("coco2017")) == 81
    assert eval_class_names("voc2007") == eval_class_names("voc2012")  # every preset, same classes
    assert eval_class_names("coco2014") == eval_class_names("coco2017")
    assert eval_class_names("cocostuff") == coarse27_names() and len(coarse27_names()) == 27
    assert len(set(coarse27_names())) == 27
    with pytest.raises(UserError, match="voc2012: no clip_es.coarse27_names"):
        coarse27_names(load_preset("voc2012"))
    with pytest.raises(UserError, match="unknown dataset 'ade20k'"):
        eval_class_names("ade20k")


def test_coarse27_names_match_the_preset_mapping():
    preset = load_preset("cocostuff")
    coarse = dict(zip(preset.classes, preset.clip_es.class_to_coarse27))
    expected = {"person": "person", "bicycle": "vehicle", "tv": "electronic", "microwave": "appliance",
                "banana": "food", "chair": "furniture", "book": "indoor", "fork": "kitchen",
                "backpack": "accessory", "dog": "animal", "bench": "outdoor", "kite": "sports",
                "ceiling-tile": "ceiling", "carpet": "floor", "salad": "food-stuff", "cabinet": "furniture-stuff",
                "paper": "rawmaterial", "curtain": "textile", "wall-brick": "wall", "window-blind": "window",
                "skyscraper": "building", "gravel": "ground", "grass": "plant", "clouds": "sky",
                "mountain": "solid", "fence": "structural", "sea": "water"}
    assert {name: coarse27_names()[coarse[name]] for name in expected} == expected


def _write_pair(tmp_path, image_id, pred, gt):
    write_label_png(tmp_path / "pred" / f"{image_id}.png", pred)
    write_label_png(tmp_path / "gt" / f"{image_id}.png", gt)


def test_evaluate_dirs_accumulates_images(tmp_path):
    _write_pair(tmp_path, "a", PRED, GT)
    _write_pair(tmp_path, "b", GT, GT)  # perfect image
    r = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012")
    assert r["num_images"] == 2 and r["dataset"] == "voc2012" and r["split"] is None and r["missing"] == []
    # totals: class 0: tp 3, gt 4, pred 4 -> 3/5; class 1: tp 5, gt 6, pred 6 -> 5/7; class 2: tp 3, gt 4, pred 3 -> 3/4
    assert r["mIoU"] == pytest.approx(100 * (3 / 5 + 5 / 7 + 3 / 4) / 3)
    rows = list(r["per_class"].values())
    assert list(r["per_class"])[:3] == ["background", "aeroplane", "bicycle"] and len(rows) == 21
    assert [(row["gt_pixels"], row["pred_pixels"]) for row in rows[:3]] == [(4, 4), (6, 6), (4, 3)]
    assert rows[3] == {"IoU": None, "Acc": None, "gt_pixels": 0, "pred_pixels": 0}
    assert r["num_classes_evaluated"] == 3
    table = format_table(r)
    assert f"mIoU {100 * (3 / 5 + 5 / 7 + 3 / 4) / 3:6.2f}" in table
    lines = [line.split() for line in table.splitlines()]
    assert ["aeroplane", "71.43", "83.33"] in lines and ["bird", "n/a", "n/a"] in lines  # 5/7, 5/6; no GT
    assert table.endswith("(voc2012: 3 classes with ground truth, 2 images)")
    pooled = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", workers=2)
    assert pooled == r


def test_split_missing_and_size_errors(tmp_path):
    _write_pair(tmp_path, "a", PRED, GT)
    write_label_png(tmp_path / "gt" / "b.png", GT)
    split = tmp_path / "val.txt"
    split.write_text("a\nb\n")
    with pytest.raises(UserError, match=r"pred/b\.png: prediction not found"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", split)
    r = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", split, missing_as_wrong=True)
    assert r["missing"] == ["b"] and r["num_images"] == 2 and r["split"] == str(split)
    # b's 7 valid pixels are all wrong: pixel accuracy 4 / 14
    assert r["aAcc"] == pytest.approx(400 / 14)
    write_label_png(tmp_path / "pred" / "b.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(UserError, match=r"pred/b\.png: prediction is 3x3"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", split)
    write_label_png(tmp_path / "pred" / "b.png", np.full((2, 4), 30, np.uint8))
    with pytest.raises(UserError, match=r"pred/b\.png: prediction holds label 30"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", split)


def test_tool_writes_json_and_reports_errors_in_one_line(tmp_path):
    _write_pair(tmp_path, "a", PRED, GT)
    tool = [sys.executable, str(ROOT / "tools" / "eval_masks.py")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(tool + ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                                "--dataset", "voc2012", "--out", str(tmp_path / "m")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "m" / "results.json").read_text())["mIoU"] == pytest.approx(400 / 9)
    assert read_results(tmp_path / "m" / "results.json")["per_class"]["bicycle"]["IoU"] == pytest.approx(50)
    assert "| bicycle | 50.00 | 50.00 | 2 | 1 |" in (tmp_path / "m" / "results.md").read_text()
    assert "mIoU  44.44" in ok.stdout
    bad = subprocess.run(tool + ["--pred", str(tmp_path / "nope"), "--gt", str(tmp_path / "gt"),
                                 "--dataset", "voc2012"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: --pred folder not found"]
