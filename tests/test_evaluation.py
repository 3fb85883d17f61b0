import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.presets import load_preset
from wsss.evaluation.miou import (COARSE27_NAMES, confusion_matrix, eval_class_names, evaluate_dirs,
                             format_table, metrics_from_confusion)
from tagclip_cls.formats.mask_png import write_label_png

ROOT = Path(__file__).resolve().parent.parent
GT = np.array([[0, 0, 1, 1], [1, 255, 2, 2]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [255, 0, 2, 0]], np.uint8)


def test_confusion_by_hand():
    conf = confusion_matrix(PRED, GT, 3)
    # rows gt, columns pred 0,1,2 and "255"; the gt-255 pixel is skipped
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 1], [1, 0, 1, 0]]


def test_metrics_by_hand():
    m = metrics_from_confusion(confusion_matrix(PRED, GT, 3), ["a", "b", "c"])
    # IoU: a 1/(2+2-1), b 2/(3+3-2), c 1/(2+1-1); pred-255 counts against b but is nobody's FP
    assert [c["iou"] for c in m["classes"]] == pytest.approx([100 / 3, 50, 50])
    assert m["miou"] == pytest.approx(400 / 9)
    assert m["pixel_accuracy"] == pytest.approx(400 / 7)
    assert m["mean_class_accuracy"] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1 / 2) / 3)


def test_class_without_gt_is_null_and_left_out():
    gt = np.array([[0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 2, 1, 1]], np.uint8)
    m = metrics_from_confusion(confusion_matrix(pred, gt, 3), ["a", "b", "c"])
    assert m["classes"][2]["iou"] is None and m["classes"][2]["pred_pixels"] == 1
    assert m["miou"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert m["num_classes_with_gt"] == 2


def test_out_of_range_labels_rejected():
    with pytest.raises(ValueError, match="prediction holds label 7"):
        confusion_matrix(np.array([[7]], np.uint8), np.array([[0]], np.uint8), 3)


def test_class_lists():
    assert len(eval_class_names("voc2012")) == 21 and eval_class_names("voc2012")[0] == "background"
    assert len(eval_class_names("coco2017")) == 81
    assert eval_class_names("cocostuff") == COARSE27_NAMES and len(COARSE27_NAMES) == 27
    with pytest.raises(UserError):
        eval_class_names("ade20k")


def test_coarse27_names_match_the_preset_mapping():
    preset = load_preset("cocostuff")
    coarse = dict(zip(preset.classes, preset.clip_es["class_to_coarse27"]))
    expected = {"person": "person", "bicycle": "vehicle", "tv": "electronic", "microwave": "appliance",
                "banana": "food", "chair": "furniture", "book": "indoor", "fork": "kitchen",
                "backpack": "accessory", "dog": "animal", "bench": "outdoor", "kite": "sports",
                "ceiling-tile": "ceiling", "carpet": "floor", "salad": "food-stuff", "cabinet": "furniture-stuff",
                "paper": "rawmaterial", "curtain": "textile", "wall-brick": "wall", "window-blind": "window",
                "skyscraper": "building", "gravel": "ground", "grass": "plant", "clouds": "sky",
                "mountain": "solid", "fence": "structural", "sea": "water"}
    assert {name: COARSE27_NAMES[coarse[name]] for name in expected} == expected


def _write_pair(tmp_path, image_id, pred, gt):
    write_label_png(tmp_path / "pred" / f"{image_id}.png", pred)
    write_label_png(tmp_path / "gt" / f"{image_id}.png", gt)


def test_evaluate_dirs_accumulates_images(tmp_path):
    _write_pair(tmp_path, "a", PRED, GT)
    _write_pair(tmp_path, "b", GT, GT)  # perfect image
    r = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012")
    assert r["num_images"] == 2
    # totals: class 0: tp 3, gt 4, pred 4 -> 3/5; class 1: tp 5, gt 6, pred 6 -> 5/7; class 2: tp 3, gt 4, pred 3 -> 3/4
    assert r["miou"] == pytest.approx(100 * (3 / 5 + 5 / 7 + 3 / 4) / 3)
    assert r["classes"][3]["iou"] is None
    assert "mIoU" in format_table(r)
    pooled = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", workers=2)
    assert pooled["miou"] == r["miou"]


def test_split_missing_and_size_errors(tmp_path):
    _write_pair(tmp_path, "a", PRED, GT)
    write_label_png(tmp_path / "gt" / "b.png", GT)
    split = tmp_path / "val.txt"
    split.write_text("a\nb\n")
    with pytest.raises(UserError, match=r"pred/b\.png: prediction not found"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", split)
    r = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", "voc2012", split, missing_as_wrong=True)
    assert r["missing"] == ["b"]
    # b's 7 valid pixels are all wrong: pixel accuracy 4 / 14
    assert r["pixel_accuracy"] == pytest.approx(400 / 14)
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
                                "--dataset", "voc2012", "--out", str(tmp_path / "m.json")],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == pytest.approx(400 / 9)
    bad = subprocess.run(tool + ["--pred", str(tmp_path / "nope"), "--gt", str(tmp_path / "gt"),
                                 "--dataset", "voc2012"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: directory not found"]
