"""The demo on small versions of the sample images with a tiny random CLIP (stage 3 when mmcv works)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import wsss.apps.demo as demo
from conftest import TINY
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.formats.mask_folder import read_cams
from wsss.apps.demo import CLASSES, RANDOM_BANNER, SAMPLES, DemoOptions, run_demo
from tagclip_cls.formats.mask_png import read_label_png
from wsss.evaluation.results import read_results

HORSE = CLASSES.index("horse") + 1
ROOT = Path(__file__).resolve().parent.parent


def go_offline(mp: pytest.MonkeyPatch) -> None:
    """No route to the weights hub: load_clip's quick connection test fails."""
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        mp.delenv(name, raising=False)
    mp.setattr("tagclip_cls.core.models.socket.create_connection", refuse)
    mp.setattr("tagclip_cls.core.models._weights_cached", lambda *args: False)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """The demo with no network: it must fall back to random weights (tiny ones here)."""
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp)
        result = run_demo(DemoOptions(out=str(out), random_dims=TINY, image_side=64, skip_train=True,
                                      cache_dir=str(out / "text_cache"), progress=False))
    return out, result


def test_falls_back_to_random_weights_and_says_so(offline_run, capsys):
    out, result = offline_run
    assert result.weights.random and Path(result.weights.pretrained).parent == out / "weights"
    assert not result.trained and "--skip-train given" in result.notes[-1]
    report = result.report.read_text()
    banner = re.search(r'<div class="banner">(.*?)</div>', report).group(1)
    assert banner == RANDOM_BANNER
    assert "RANDOM weights" in report


def test_stage_outputs_fit_the_images(offline_run):
    out, _ = offline_run
    records = [json.loads(line) for line in (out / "stage1" / "tags.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(SAMPLES)
    for record in records:
        assert len(record["scores"]) == len(CLASSES)
        with Image.open(out / "images" / f"{record['id']}.jpg") as im:
            w, h = im.size
        assert max(w, h) == 64
        keys, cams = read_cams(out / "stage2" / "cams" / f"{record['id']}.npz")
        assert keys == record["tags"] and cams.shape == (len(keys), h, w)
        for sub in ("masks", "masks_crf"):
            labels = read_label_png(out / "stage2" / sub / f"{record['id']}.png")
            assert labels.shape == (h, w)
            assert set(np.unique(labels).tolist()) <= {0, 255, *(k + 1 for k in keys)}


def test_horse_ground_truth_and_tables(offline_run):
    out, result = offline_run
    gt = read_label_png(out / "gt" / "horse.png")
    with Image.open(out / "images" / "horse.jpg") as im:
        assert gt.shape == (im.height, im.width)
        rgb = np.asarray(im).astype(int)
    assert set(np.unique(gt).tolist()) == {0, HORSE}
    assert 0.2 < (gt == HORSE).mean() < 0.45  # the silhouette covers about a third of the picture
    assert rgb[gt == HORSE].mean() < rgb[gt == 0].mean() - 80  # dark horse on a light backdrop
    for name in ("masks", "masks_crf"):
        table = read_results(out / "eval" / f"{name}.json")
        assert table["num_images"] == 1 and table["dataset"] == "demo" and table["missing"] == []
        assert list(table["per_class"]) == ["background", *CLASSES]
        with_gt = [n for n, row in table["per_class"].items() if row["gt_pixels"]]
        assert with_gt == ["background", "horse"] and table["num_classes_evaluated"] == 2
        assert table["per_class"]["background"]["gt_pixels"] == int((gt == 0).sum())
        assert table["per_class"]["horse"]["gt_pixels"] == int((gt == HORSE).sum())
        pred = read_label_png(out / "stage2" / name / "horse.png")
        assert table["per_class"]["horse"]["pred_pixels"] == int((pred == HORSE).sum())
        hits = int(((pred == HORSE) & (gt == HORSE)).sum())
        union = int(((pred == HORSE) | (gt == HORSE)).sum())
        assert table["per_class"]["horse"]["IoU"] == pytest.approx(100 * hits / union)
    cards = re.findall(r'<section class="card" id="img-([^"]+)">(.*?)</section>', result.report.read_text())
    assert sorted(i for i, _ in cards) == sorted(SAMPLES)
    records = [json.loads(line) for line in (out / "stage1" / "tags.jsonl").read_text().splitlines()]
    tags = {r["id"]: r["tags"] for r in records}
    for image_id, card in cards:
        assert card.count('<img class="cam"') == len(tags[image_id])
        assert card.count('<div class="legend">') == 2  # before and after CRF, no segmenter
    assert result.report.read_text().count('<div class="miou">') == 2


def test_compare_puts_the_eval_tables_beside_the_papers(offline_run, tmp_path):
    """compare_results.py on eval/masks.json and eval/masks_crf.json: both runs with their delta,
    TagCLIP's six CLS-SEG figures as references of other class tables, no delta."""
    out, _ = offline_run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_results.py"), out / "eval" / "masks.json",
                           out / "eval" / "masks_crf.json", "--out", tmp_path], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["compare.html", "compare.md"]
    text = (tmp_path / "compare.md").read_text()
    assert text.startswith("## pseudo masks (eval_masks.py): mIoU, classes of your own list (6)")
    rows = {line.split(" | ")[0][2:]: line.strip("|").split(" | ") for line in text.splitlines()
            if line.startswith(("| R", "| reference |", "| paper |"))}
    plain, crf = (read_results(out / "eval" / f"{name}.json")["mIoU"] for name in ("masks", "masks_crf"))
    delta = crf - plain
    assert rows["R1"][1] == str(out / "eval" / "masks") and rows["R1"][4] == f"{plain:.2f}"
    assert rows["R2"][1] == str(out / "eval" / "masks_crf") and rows["R2"][4] == f"{crf:.2f}"
    assert rows["R2"][-1].strip() == (f"**{delta:+.2f}**" if abs(delta) >= 1 else f"{delta:+.2f}")
    references = [line for line in text.splitlines() if line.startswith("| reference |")]
    assert "paper" not in rows and len(references) == 6
    marks = ["other classes (voc2012, 21): no delta", "other classes (coco2017, 81): no delta",
             "other classes (cocostuff, 27): no delta"]
    for line, value, mark in zip(references, (64.8, 68.7, 34.0, 35.3, 30.1, 31.0), [m for m in marks for _ in "ab"]):
        assert f"| {value:.2f} |" in line and line.endswith(f"| {mark} |")
        assert "TagCLIP CLS-SEG" in line and "| TagCLIP: " in line
    summary = (tmp_path / "compare.html").read_text().split('<table class="classes">')[0]
    assert summary.count('<tr class="reference">') == 6 and summary.count('<tr class="run">') == 2
    assert summary.count('<td class="mark">other classes (') == 6


def test_rerun_resumes_without_recomputing(offline_run):
    out, _ = offline_run
    stamps = {p: p.stat().st_mtime_ns for p in (out / "stage2").rglob("*.np*")}
    with pytest.MonkeyPatch.context() as mp:
        go_offline(mp)
        run_demo(DemoOptions(out=str(out), random_dims=TINY, image_side=64, skip_train=True,
                             cache_dir=str(out / "text_cache"), progress=False))
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "stage2").rglob("*.np*")}


def test_unfetchable_weights_fall_back(tmp_path, monkeypatch, capsys):
    def no_weights(model, pretrained, device="cpu"):
        raise UserError("could not fetch ViT-B-16 weights 'openai'")

    monkeypatch.setattr(demo, "load_clip", no_weights)
    weights = demo.resolve_weights(DemoOptions(out=str(tmp_path), random_dims=TINY), tmp_path)
    assert weights.random and Path(weights.pretrained).is_file()
    err = capsys.readouterr().err
    assert "could not fetch ViT-B-16 weights" in err and "RANDOM weights" in err
    given = demo.resolve_weights(DemoOptions(out=str(tmp_path), pretrained="/x/ViT-B-16.pt"), tmp_path)
    assert given == demo.Weights("/x/ViT-B-16.pt", False, "pretrained /x/ViT-B-16.pt")


def test_stage3_trains_and_predicts(offline_run, tmp_path):
    pytest.importorskip("mmcv.ops")
    src, _ = offline_run
    out = tmp_path / "demo"
    shutil.copytree(src, out)
    result = run_demo(DemoOptions(out=str(out), random_weights=True, random_dims=TINY, image_side=64,
                                  train_iters=4, seg_size=32, cache_dir=str(out / "text_cache"), progress=False))
    assert result.trained and (out / "stage3" / "iter_4.pth").is_file()
    for image_id in SAMPLES:
        pred = read_label_png(out / "stage3" / "pred" / f"{image_id}.png")
        with Image.open(out / "images" / f"{image_id}.jpg") as im:
            assert pred.shape == (im.height, im.width)
        assert pred.max() <= len(CLASSES)
    table = read_results(out / "eval" / "segmenter.json")
    assert table["num_images"] == 1 and table["mIoU"] is not None
    report = result.report.read_text()
    assert report.count('<img class="mask"') == 3 * len(SAMPLES) and report.count('<div class="miou">') == 3
    # the copy's random weights lie elsewhere, so stages 1 and 2 were redone too
    assert [(s.name, s.ran) for s in result.stages] == [("stage1", True), ("stage2", True), ("eval", False),
                                                         ("stage3", True)]
    again = run_demo(DemoOptions(out=str(out), random_weights=True, random_dims=TINY, image_side=64,
                                 train_iters=4, seg_size=32, cache_dir=str(out / "text_cache"), progress=False))
    assert [s.name for s in again.stages if s.ran] == [] and again.trained


def test_segmenter_options_fit_the_tiny_config(tmp_path):
    """The tiny DeepLab config as the demo's stage 3 reads it, against hand-written expectations."""
    pytest.importorskip("mmengine")
    from wsss.apps.pipeline import final_checkpoint
    from wsss.seg.runner import load_config

    options = demo.segmenter_options(size=40, iters=7)
    cfg = load_config(demo.TINY_SEG_CONFIG, data_root=str(tmp_path), work_dir=str(tmp_path / "stage3"),
                      cfg_options=options)
    steps = {step.type: step for step in cfg.train_dataloader.dataset.pipeline}
    assert steps["RandomResize"].scale == (40, 40) and steps["RandomCrop"].crop_size == (40, 40)
    assert steps["RandomResize"].ratio_range == (0.75, 1.25)  # the rest of each step is the config's
    assert cfg.model.data_preprocessor.size == (40, 40)
    assert [s.scale for s in cfg.test_pipeline if s.type == "Resize"] == [(40, 40)]
    assert cfg.model.decode_head.num_classes == len(CLASSES) + 1 == 6
    assert cfg.train_cfg.max_iters == 7 and cfg.param_scheduler[0].end == 7
    assert cfg.default_hooks.checkpoint.interval == 7 and cfg.default_hooks.logger.interval == 1
    dataset = cfg.train_dataloader.dataset
    assert (dataset.data_root, dataset.data_prefix.img_path, dataset.ann_file) == (str(tmp_path), "images", "ids.txt")
    assert cfg.val_dataloader is None and cfg.test_evaluator is None and cfg.custom_hooks == []
    assert final_checkpoint(str(demo.TINY_SEG_CONFIG), options, tmp_path / "stage3") == tmp_path / "stage3" / "iter_7.pth"


def test_record_decides_what_is_redone(tmp_path, caplog):
    """inputs.json: other weights redo everything, other segmenter settings only stage 3."""
    weights = {"pretrained": "w.pt", "random": False, "description": "d"}
    first = {"weights": weights, "image_side": 64, "segmenter": {"iters": 4, "size": 32}}
    opts = DemoOptions(out=str(tmp_path))
    assert demo.check_record(tmp_path, opts, first) == opts  # nothing made yet: nothing to redo
    work_dir = tmp_path / "stage3"
    (work_dir / "pred").mkdir(parents=True)
    (work_dir / "iter_4.pth").write_bytes(b"x")
    assert demo.check_record(tmp_path, opts, {**first, "segmenter": None}) == opts  # a run without stage 3
    assert json.loads((tmp_path / "inputs.json").read_text())["segmenter"] == first["segmenter"]
    assert demo.check_record(tmp_path, opts, first) == opts and work_dir.is_dir()
    assert demo.check_record(tmp_path, opts, {**first, "segmenter": {"iters": 8, "size": 32}}) == opts
    assert not work_dir.exists() and "training from scratch" in caplog.text
    redo = demo.check_record(tmp_path, opts, {**first, "image_side": 96})
    assert redo.overwrite and json.loads((tmp_path / "inputs.json").read_text())["image_side"] == 96
    (tmp_path / "inputs.json").write_text("{damaged")
    assert demo.check_record(tmp_path, opts, first).overwrite


def test_other_weights_recompute_everything(offline_run, tmp_path, tiny_checkpoint):
    src, _ = offline_run
    out = tmp_path / "demo"
    shutil.copytree(src, out)
    cam = out / "stage2" / "cams" / "cat.npz"
    stamp = cam.stat().st_mtime_ns
    result = run_demo(DemoOptions(out=str(out), pretrained=tiny_checkpoint, image_side=64, skip_train=True,
                                  cache_dir=str(out / "text_cache"), progress=False))
    assert not result.weights.random and 'class="banner"' not in result.report.read_text()
    assert cam.stat().st_mtime_ns != stamp
    assert json.loads((out / "inputs.json").read_text())["weights"]["pretrained"] == tiny_checkpoint
