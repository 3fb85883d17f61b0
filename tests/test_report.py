"""wsss.apps.report: sections, one card per image, CAM and legend counts, escaping, atomic writes,
colour scale, readable overlays and sizes; tools/make_report.py on hand-written stage outputs:
the random-weights banner, one-line errors, a --help that imports no torch."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagclip_cls.runtime.atomic_io import write_json_atomic
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.formats.mask_png import write_label_png
from tagclip_cls.formats.mask_folder import MaskFolder, write_cams
from tagclip_cls.formats.tags import TagFolder, tag_record
from wsss.apps.report import (RANDOM_BANNER, RANDOM_NOTE, ReportInputs, cam_overlay, display_size, mask_overlay,
                              render_report, resize_picture, write_report)
from wsss.apps.run_report import RunReportOptions, make_run_report, run_report_inputs

ROOT = Path(__file__).resolve().parent.parent

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


def _luminance(rgb) -> float:
    r, g, b = (float(v) for v in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _decode(uri: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB"))


def test_overlays_stay_readable_on_a_black_photo():
    black = np.zeros((8, 8, 3), np.uint8)
    labels = np.zeros((8, 8), np.uint8)
    labels[:, 4:] = 1  # background (palette black) left, class 1 (palette (128, 0, 0)) right
    out = mask_overlay(black, labels).astype(int)
    left, right = out[4, 1], out[4, 6]  # inside the regions, away from the border
    assert _luminance(left) >= 50 and _luminance(right) >= 50  # not near-black
    assert np.abs(left - right).max() >= 40  # the two regions look different
    # each region is outlined in its pure palette colour along the border
    assert out[4, 3].tolist() == [0, 0, 0] and out[4, 4].tolist() == [128, 0, 0]
    assert out[0, 0].tolist() == left.tolist()  # the image's edge is no region border
    hot, cold = cam_overlay(black, np.ones((8, 8))).astype(int), cam_overlay(black, np.zeros((8, 8))).astype(int)
    assert _luminance(hot[0, 0]) >= 50 and _luminance(cold[0, 0]) >= 50
    assert np.abs(hot[0, 0] - cold[0, 0]).max() >= 40


def test_small_pictures_are_enlarged_and_labels_stay_labels():
    assert display_size(40, 60, 256, 160) == (107, 160)  # 40 * 160 / 60 = 106.7
    assert display_size(300, 200, 256, 160) == (256, 171)  # large ones still shrink
    assert display_size(40, 60, 20, 160) == (13, 20)  # the minimum never exceeds the maximum
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    big = resize_picture(labels, (160, 160), nearest=True)
    # nearest-neighbour: each label becomes an 80x80 block, no value in between is invented
    assert big.tolist() == [[0] * 80 + [1] * 80] * 80 + [[2] * 80 + [255] * 80] * 80


# --- tools/make_report.py on stage outputs written by hand -------------------------------------

RUN_CLASSES = ("cat", "dog")
PHOTO_HW = (24, 32)  # small: shown enlarged to a longer side of 160


def _write_run(root: Path, random1: bool = False, random2: bool = False) -> dict[str, Path]:
    """Two images (one black), stage 1 and 2 folders with their run configs, predictions and a
    results table, as the stages would leave them."""
    h, w = PHOTO_HW
    images = root / "images"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(images / "dark.png")
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(images / "light.png")
    records = [tag_record("dark", [0.9, 0.2], [0], ["cat"]), tag_record("light", [0.3, 0.8], [1], ["dog"])]
    tags = TagFolder(root / "stage1")
    tags.write(records, RUN_CLASSES, {})
    write_json_atomic(tags.run_config, {"model": "tiny", "random_weights": random1, "classes": list(RUN_CLASSES)})
    masks = MaskFolder(root / "stage2")
    labels = np.zeros((h, w), np.uint8)
    for record in records:
        labels[:, w // 2:] = record["tags"][0] + 1
        write_cams(masks.cam(record["id"]), record["tags"], np.tile(np.linspace(0, 1, w), (1, h, 1)))
        write_label_png(masks.mask(record["id"]), labels)
        write_label_png(masks.crf(record["id"]), labels)
        write_label_png(root / "pred" / f"{record['id']}.png", labels)
    write_json_atomic(masks.config, {"model": "tiny", "random_weights": random2, "classes": list(RUN_CLASSES)})
    table = root / "masks.json"
    table.write_text(json.dumps(_results(
        mIoU=50.0, mAcc=60.0, aAcc=70.0, num_classes_evaluated=1,
        per_class={"background": {"IoU": 50.0, "Acc": 60.0, "gt_pixels": 4, "pred_pixels": 4}})))
    classes = root / "classes.txt"
    classes.write_text("".join(c + "\n" for c in RUN_CLASSES))
    return {"images": images, "tags": tags.root, "masks": masks.root, "seg": root / "pred", "table": table,
            "classes": classes, "out": root / "out" / "report.html"}


def _options(run: dict[str, Path], **changes) -> RunReportOptions:
    fields = dict(tags=str(run["tags"]), img_root=str(run["images"]), out=str(run["out"]), masks=str(run["masks"]),
                  seg=str(run["seg"]), tables=[str(run["table"])], classes=str(run["classes"]))
    return RunReportOptions(**{**fields, **changes})


def _tool(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "make_report.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_make_report_end_to_end(tmp_path):
    run = _write_run(tmp_path)
    done = _tool("--tags", run["tags"], "--masks", run["masks"], "--seg", run["seg"], "--tables", run["table"],
                 "--img-root", run["images"], "--classes", run["classes"], "--out", run["out"])
    assert done.returncode == 0, done.stderr
    text = run["out"].read_text()
    cards = _cards(text)
    assert list(cards) == ["dark", "light"]
    assert 'class="banner"' not in text and '<p class="random-note">' not in text  # real weights
    for card in cards.values():
        assert card.count('<img class="cam"') == 1 and card.count('<img class="mask"') == 3
        assert card.count('<div class="camscale">') == 1  # the colour scale beside the heat maps
        photo = re.search(r'<img class="photo" src="([^"]+)"', card).group(1)
        assert _decode(photo).shape == (120, 160, 3)  # 32x24 enlarged: 24 * 160 / 32 = 120
    assert text.count('<div class="miou">') == 1 and "mIoU <b>50.00</b>" in text
    assert "<td>dog</td><td>0.800</td>" in cards["light"]


def test_cam_colour_scale_runs_from_blue_to_red(tmp_path):
    run = _write_run(tmp_path)
    text = render_report(run_report_inputs(_options(run)))
    scale = re.search(r'<div class="camscale"><span>0</span><img src="(data:image/png[^"]+)"[^>]*>'
                      r"<span>1</span></div>", text)
    assert scale is not None
    bar = _decode(scale.group(1))
    # OpenCV's JET: 0 is dark blue (0, 0, 128), 1 dark red (128, 0, 0), the middle green
    assert bar[0, 0].tolist() == [0, 0, 128] and bar[0, -1].tolist() == [128, 0, 0]
    middle = bar[0, bar.shape[1] // 2]
    assert middle[1] > 200 and middle[1] > middle[0] and middle[1] > middle[2]


@pytest.mark.parametrize("random1, random2", [(False, False), (True, False), (False, True)])
def test_banner_iff_a_run_config_says_random_weights(tmp_path, random1, random2):
    run = _write_run(tmp_path, random1, random2)
    text = make_run_report(_options(run)).read_text()
    banners = re.findall(r'<div class="banner">(.*?)</div>', text)
    notes = re.findall(r'<p class="random-note">(.*?)</p>', text)
    if random1 or random2:
        assert banners == [RANDOM_BANNER]
        # one note per table: the mIoU table and the two tag-score tables
        assert notes == [RANDOM_NOTE] * 3
        assert text.split('id="miou"')[1].count(f'<p class="random-note">{RANDOM_NOTE}</p>') == 1
        beside_scores = f'<p class="random-note">{RANDOM_NOTE}</p><table class="scores">'
        assert all(beside_scores in card for card in _cards(text).values())
    else:
        assert banners == [] and notes == []


def test_older_outputs_without_run_configs_have_no_banner(tmp_path):
    run = _write_run(tmp_path, True, True)
    TagFolder(run["tags"]).run_config.unlink()
    MaskFolder(run["masks"]).config.unlink()
    text = make_run_report(_options(run)).read_text()
    assert 'class="banner"' not in text and "unknown (no run config)" in text


def test_tags_file_stands_for_its_folder(tmp_path):
    run = _write_run(tmp_path, random1=True)
    for name in ("tags.jsonl", "tags.txt"):
        text = make_run_report(_options(run, tags=str(run["tags"] / name), masks=None, seg=None, tables=[])).read_text()
        assert list(_cards(text)) == ["dark", "light"] and text.count('<div class="banner">') == 1


def _mistake(run: dict[str, Path], tmp_path: Path, mistake: str) -> tuple[list, str]:
    """Arguments with one user mistake, and a pattern its error must match."""
    args = {"--tags": run["tags"], "--masks": run["masks"], "--seg": run["seg"], "--tables": run["table"],
            "--img-root": run["images"], "--classes": run["classes"]}
    message = {
        "no tags folder": "nope: stage-1 output folder not found",
        "no tags.jsonl": "empty/tags.jsonl: not found",
        "tags is a class file": "classes.txt: --tags expects stage 1's output folder",
        "no masks folder": "nope: stage-2 output folder not found",
        "label map size": "dark.png: label map is 5x5, its image 32x24",
        "unknown dataset": r"unknown dataset 'nope'|--dataset: invalid choice: 'nope'",
        "no class list": "one of the arguments --dataset --classes is required",
        "other classes": "stage1/parts/run_config.json: the outputs were made for other classes",
        "no table": "nope.json: results file not found",
        "damaged run config": "stage2/config.json: damaged run config",
        "out is a folder": "--out is a folder",
    }[mistake]
    if mistake == "no tags folder":
        args["--tags"] = tmp_path / "nope"
    elif mistake == "no tags.jsonl":
        (tmp_path / "empty").mkdir()
        args["--tags"] = tmp_path / "empty"
    elif mistake == "tags is a class file":
        args["--tags"] = run["classes"]
    elif mistake == "no masks folder":
        args["--masks"] = tmp_path / "nope"
    elif mistake == "label map size":
        write_label_png(run["seg"] / "dark.png", np.zeros((5, 5), np.uint8))
    elif mistake == "no class list":
        del args["--classes"]
    elif mistake == "unknown dataset":
        del args["--classes"]
        args["--dataset"] = "nope"
    elif mistake == "other classes":
        del args["--classes"]
        args["--dataset"] = "voc2012"
    elif mistake == "no table":
        args["--tables"] = tmp_path / "nope.json"
    elif mistake == "damaged run config":
        MaskFolder(run["masks"]).config.write_text("{not json")
    return [v for pair in args.items() for v in pair], message


@pytest.mark.parametrize("mistake", ["no tags folder", "no tags.jsonl", "tags is a class file", "no masks folder",
                                     "label map size", "no class list", "unknown dataset", "other classes", "no table",
                                     "damaged run config", "out is a folder"])
def test_user_mistakes_are_one_line_errors(tmp_path, mistake):
    run = _write_run(tmp_path)
    args, message = _mistake(run, tmp_path, mistake)
    out = run["out"]
    if mistake == "out is a folder":
        out.mkdir(parents=True)
    done = _tool(*args, "--out", out)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert re.search(message, done.stderr), done.stderr
    if mistake == "out is a folder":
        assert list(out.iterdir()) == []
    else:
        assert not out.parent.exists()  # no report, not even its folder


def test_help_and_parsing_import_no_torch():
    tool = str(ROOT / "tools" / "make_report.py")
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('make_report', {tool!r})\n"
            "tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)\n"
            "args = tool.parse_args(['--tags', 't', '--img-root', 'i', '--dataset', 'voc2012', '--out', 'o.html',\n"
            "                        '--tables', 'a.json', '--tables', 'b.json', 'c.json'])\n"
            "print(args.tables, sorted(m for m in ('torch', 'cv2', 'PIL', 'open_clip') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['a.json', 'b.json', 'c.json'] []"
    helped = _tool("--help")
    assert helped.returncode == 0 and "--max-images" in helped.stdout and helped.stderr == ""


def _report_args(run: dict[str, Path]) -> list:
    return ["--tags", run["tags"], "--masks", run["masks"], "--seg", run["seg"], "--tables", run["table"],
            "--img-root", run["images"], "--classes", run["classes"], "--out", run["out"]]


def test_report_linked_outside_its_folder_is_refused(tmp_path):
    run = _write_run(tmp_path)
    outside = tmp_path / "elsewhere.html"
    outside.write_text("precious\n")
    run["out"].parent.mkdir()
    run["out"].symlink_to(outside)
    done = _tool(*_report_args(run))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: {run['out']}: would be written outside {run['out'].parent} "
                           f"(it leads to {outside})\n")
    assert outside.read_text() == "precious\n" and run["out"].is_symlink()


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_make_report_refuses_ids_leading_out_of_the_image_folder(tmp_path, where):
    """A ``tags.jsonl`` id naming a file outside ``--img-root`` is refused, naming the file and
    line, before any image is read: the picture never reaches the report (none is written)."""
    run = _write_run(tmp_path)
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((*PHOTO_HW, 3), (12, 240, 77), np.uint8)).save(secret)
    bad_id = "../secret" if where == "parent" else str(tmp_path / "secret")
    jsonl = TagFolder(run["tags"]).jsonl
    lines = jsonl.read_text().splitlines()
    lines[1] = json.dumps(tag_record(bad_id, [0.3, 0.8], [1], ["dog"]))
    jsonl.write_text("\n".join(lines) + "\n")
    done = _tool(*_report_args(run))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {jsonl}:2: ") and done.stderr.count("\n") == 1, done.stderr
    assert repr(bad_id) in done.stderr and "data:image" not in done.stdout + done.stderr
    assert not run["out"].parent.exists()  # no report, not even its folder
    with pytest.raises(UserError, match=rf"^{re.escape(str(jsonl))}:2: "):
        render_report(ReportInputs(images=run["images"], tags=jsonl, class_names=RUN_CLASSES))
