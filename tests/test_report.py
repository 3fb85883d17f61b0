"""wsss.apps.report: sections, one card per image, CAM and legend counts, escaping, atomic writes."""
from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.formats.mask_png import write_label_png
from tagclip_cls.formats.mask_folder import write_cams
from wsss.apps.report import ReportInputs, cam_overlay, display_size, render_report, write_report

CLASSES = ("cat", "<b>dog</b> & co", "person")
SIZES = {"one": (40, 60), "two": (50, 30), "three": (36, 36)}
TAGS = {"one": [0, 1], "two": [2], "three": []}


@pytest.fixture()
def outputs(tmp_path):
    rng = np.random.default_rng(0)
    images, stage2, preds = tmp_path / "images", tmp_path / "stage2", tmp_path / "pred"
    images.mkdir()
    records = []
    for image_id, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{image_id}.png")
        keys = TAGS[image_id]
        write_cams(stage2 / "cams" / f"{image_id}.npz", keys, rng.random((len(keys), h, w)))
        labels = np.zeros((h, w), np.uint8)
        if keys:
            labels[: h // 2] = keys[0] + 1
            labels[-2:] = 255
        write_label_png(stage2 / "masks" / f"{image_id}.png", labels)
        if image_id != "three":  # no CRF mask for "three": its card shows one panel fewer
            write_label_png(stage2 / "masks_crf" / f"{image_id}.png", labels)
        write_label_png(preds / f"{image_id}.png", labels)
        scores = [0.1, 0.2, 0.3]
        records.append({"id": image_id, "scores": scores, "tags": keys})
    tags = tmp_path / "tags.jsonl"
    tags.write_text("".join(json.dumps(r) + "\n" for r in records))
    eval_json = tmp_path / "masks.json"
    eval_json.write_text(json.dumps(_results(
        mIoU=41.5, mAcc=50.0, aAcc=80.0, num_classes_evaluated=2, dataset="voc2012", num_images=3,
        per_class={"background": {"IoU": 60.0, "Acc": 70.0, "gt_pixels": 9, "pred_pixels": 8},
                   "<cat>": {"IoU": 23.0, "Acc": 30.0, "gt_pixels": 3, "pred_pixels": 2},
                   "unseen": {"IoU": None, "Acc": None, "gt_pixels": 0, "pred_pixels": 1}})))
    seg_json = tmp_path / "results_val.json"
    seg_json.write_text(json.dumps(_results(
        split="val", iteration=4, mIoU=12.25, mAcc=20.0, aAcc=30.0, num_classes_evaluated=1,
        per_class={"background": {"IoU": 12.25, "Acc": 20.0, "gt_pixels": 5, "pred_pixels": 5}})))
    return ReportInputs(images=images, tags=tags, class_names=CLASSES, stage2=stage2, predictions=preds,
                        tables=[("pseudo masks", eval_json), ("segmenter", seg_json),
                                ("absent", tmp_path / "nope.json")],
                        banner="random weights <here>", settings=[("weights", "w & b")])


def _results(**fields) -> dict:
    """A results file (wsss.evaluation.results schema) written out by hand."""
    return {"split": None, "dataset": None, "num_images": None, "missing": [], "iteration": None,
            "checkpoint": None, "published": [], **fields}


def _cards(text: str) -> dict[str, str]:
    return dict(re.findall(r'<section class="card" id="img-([^"]+)">(.*?)</section>', text))


def test_sections_cards_cams_and_legends(outputs):
    text = render_report(outputs)
    for section in ('id="overview"', 'id="images"', 'id="miou"'):
        assert text.count(section) == 1
    cards = _cards(text)
    assert list(cards) == ["one", "two", "three"]
    for image_id, card in cards.items():
        assert card.count('<img class="cam"') == len(TAGS[image_id])
        assert card.count('<img class="photo"') == 1
        panels = 2 if image_id == "three" else 3  # masks (+ CRF) + prediction
        assert card.count('<img class="mask"') == panels
        assert card.count('<div class="legend">') == panels
    # legends list exactly the label values present: "one" has background, cat and ignore
    legend = re.search(r'<div class="legend">(.*?)</div>', cards["one"]).group(1)
    assert re.findall(r"</i>([^<]+)</span>", legend) == ["background", "cat", "ignore"]
    # tagged classes are highlighted with their scores
    assert cards["two"].count('<tr class="tag">') == 1 and "<td>person</td><td>0.300</td>" in cards["two"]


def test_tables_and_banner(outputs):
    text = render_report(outputs)
    miou = text.split('id="miou"')[1]
    assert miou.count('<div class="miou">') == 2  # the absent table is left out
    assert "mIoU <b>41.50</b> · mAcc <b>50.00</b> · aAcc <b>80.00</b>" in miou and "mIoU <b>12.25</b>" in miou
    assert "<tr><td>&lt;cat&gt;</td><td>23.00</td><td>30.00</td></tr>" in miou
    assert "unseen" not in miou  # classes without ground truth are not listed
    assert text.index('class="banner"') < text.index('id="overview"')


def test_names_are_escaped(outputs):
    text = render_report(outputs)
    assert "<b>dog</b>" not in text and "&lt;b&gt;dog&lt;/b&gt; &amp; co" in text
    assert "random weights &lt;here&gt;" in text and "w &amp; b" in text and "&lt;cat&gt;" in text


def test_embedded_images_decode_at_display_size(outputs):
    outputs.display_side = 20
    text = render_report(outputs)
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', _cards(text)["one"])
    assert len(uris) == 1 + 2 + 3
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri))) as im:
            assert im.format == "JPEG" and im.size == (20, 13)  # 60x40 scaled to a longer side of 20


def test_written_atomically(outputs, tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    assert write_report(path, outputs) == path
    first = path.read_text()
    assert first.startswith("<!DOCTYPE html>") and first.endswith("</html>\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    outputs.title = "second"
    with pytest.raises(OSError):
        write_report(path, outputs)
    assert path.read_text() == first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_bad_inputs_are_user_errors(outputs, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"accuracy": 1}')
    tables = outputs.tables
    outputs.tables = [*tables, ("bad", bad)]
    with pytest.raises(UserError, match=r"bad\.json: not a results file \(missing keys"):
        render_report(outputs)
    old = tmp_path / "old.json"  # the former eval_masks.py format is no longer guessed at
    old.write_text(json.dumps({"miou": 41.5, "classes": [{"name": "a", "iou": 41.5, "gt_pixels": 1}]}))
    outputs.tables = [*tables, ("old", old)]
    with pytest.raises(UserError, match=r"old\.json: not a results file"):
        render_report(outputs)
    outputs.tables = tables
    write_label_png(outputs.predictions / "one.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(UserError, match="one.png: label map is 5x5, its image 60x40"):
        render_report(outputs)
    (tmp_path / "tags.jsonl").write_text('{"id": "one"}\n')
    with pytest.raises(UserError, match="tags.jsonl:1: not a stage-1 record"):
        render_report(outputs)


def test_helpers():
    assert display_size(40, 60, 20) == (13, 20) and display_size(10, 10, 320) == (10, 10)
    rgb = np.zeros((4, 4, 3), np.uint8)
    hot, cold = cam_overlay(rgb, np.ones((4, 4))), cam_overlay(rgb, np.zeros((4, 4)))
    assert hot[0, 0, 0] > hot[0, 0, 2] and cold[0, 0, 2] > cold[0, 0, 0]  # JET: red high, blue low
