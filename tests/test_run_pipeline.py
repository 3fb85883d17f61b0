"""tools/run_pipeline.py: stages in order, skipped when complete, resumed when not (tiny CLIP, VOC labels)."""
from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image
from tagclip_cls.formats.mask_png import read_label_png, write_label_png
from wsss.apps.pipeline import PipelineOptions, run_pipeline
from wsss.evaluation.results import read_results

REPO = Path(__file__).resolve().parent.parent
TOOL = str(REPO / "tools" / "run_pipeline.py")
TINY_SEG = str(REPO / "configs" / "tiny" / "deeplabv2_r18-tiny_voc-64x64.py")
SIZES = {"img_a": (48, 64), "img_b": (64, 40), "img_c": (40, 40)}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    (root / "images").mkdir()
    for seed, (image_id, size) in enumerate(SIZES.items()):
        write_image(root / "images" / f"{image_id}.jpg", size, seed=seed)
    (root / "split.txt").write_text("img_a cat dog\nimg_b person\nimg_c cat\n")
    for image_id in ("img_a", "img_b"):  # img_c has no ground truth
        h, w = SIZES[image_id]
        gt = np.zeros((h, w), np.uint8)
        gt[: h // 2] = 8 if image_id == "img_a" else 15  # cat / person (class index + 1)
        write_label_png(root / "gt" / f"{image_id}.png", gt)
    return root


@pytest.fixture(scope="module")
def first_run(dataset, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    opts = PipelineOptions(img_root=str(dataset / "images"), out=str(out), dataset="voc2012",
                           split=str(dataset / "split.txt"), pretrained=tiny_checkpoint, crf_workers=0,
                           gt_masks=str(dataset / "gt"), cache_dir=str(dataset / "text_cache"), progress=False)
    return opts, run_pipeline(opts)


def _by_name(statuses):
    return {s.name: s for s in statuses}


def _copy(opts: PipelineOptions, dest: Path) -> PipelineOptions:
    shutil.copytree(opts.out, dest)
    return PipelineOptions(**{**vars(opts), "out": str(dest)})


def test_first_run_runs_every_stage(first_run):
    opts, statuses = first_run
    assert [s.name for s in statuses] == ["stage1", "stage2", "eval", "stage3", "report"]
    got = _by_name(statuses)
    assert got["stage1"].ran and got["stage1"].detail == "3 of 3 images had no tags yet"
    assert got["stage2"].ran and got["stage2"].detail.startswith("3 images computed, 0 already done, 0 failed, 3 CRF")
    assert got["eval"].ran and got["eval"].detail.startswith("2 images with ground truth")
    assert not got["stage3"].ran and got["stage3"].detail == "no --seg-config given"
    out = Path(opts.out)
    for image_id, (h, w) in SIZES.items():
        assert read_label_png(out / "stage2" / "masks_crf" / f"{image_id}.png").shape == (h, w)
    assert (out / "eval" / "ids_with_gt.txt").read_text() == "img_a\nimg_b\n"
    table = read_results(out / "eval" / "masks.json")
    assert table["num_images"] == 2 and table["dataset"] == "voc2012" and table["missing"] == []
    assert table["split"] == str(out / "eval" / "ids_with_gt.txt")
    assert {n for n, row in table["per_class"].items() if row["gt_pixels"]} == {"background", "cat", "person"}
    # img_a: top half cat (48x64 -> 24 rows), img_b: top half person (64x40 -> 32 rows), the rest background
    assert table["per_class"]["cat"]["gt_pixels"] == 24 * 64 and table["per_class"]["person"]["gt_pixels"] == 32 * 40
    assert table["per_class"]["background"]["gt_pixels"] == 24 * 64 + 32 * 40
    assert (out / "eval" / "masks.md").read_text().startswith("| result | mIoU | mAcc | aAcc |")
    report = (out / "report.html").read_text()
    assert report.count('<section class="card"') == 3 and report.count('<div class="miou">') == 2


def test_complete_stages_are_skipped(first_run, tmp_path):
    opts = _copy(first_run[0], tmp_path / "out")
    out = Path(opts.out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "report.html"}
    got = _by_name(run_pipeline(opts))
    assert [got[n].ran for n in ("stage1", "stage2", "eval")] == [False, False, False]
    assert got["stage1"].detail.startswith("tags of all 3 images")
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "report.html"}


def test_overwrite_recomputes_every_stage(first_run, tmp_path):
    opts = _copy(first_run[0], tmp_path / "out")
    opts.overwrite, opts.method, opts.crf_image = True, "coarse", "rgb"  # settings the outputs weren't made with
    got = _by_name(run_pipeline(opts))
    assert [got[n].ran for n in ("stage1", "stage2", "eval")] == [True, True, True]
    assert got["stage1"].detail == "3 of 3 images had no tags yet"
    assert got["stage2"].detail.startswith("3 images computed, 0 already done")
    out = Path(opts.out)
    assert json.loads((out / "stage1" / "parts" / "run_config.json").read_text())["method"] == "coarse"
    assert json.loads((out / "stage2" / "config.json").read_text())["crf_image"] == "rgb"


def test_eval_table_of_an_older_format_is_scored_again(first_run, tmp_path):
    opts = _copy(first_run[0], tmp_path / "out")
    out = Path(opts.out)
    (out / "eval" / "masks.json").write_text(json.dumps({"miou": 50.0, "classes": []}))  # former format
    got = _by_name(run_pipeline(opts))
    assert [got[n].ran for n in ("stage1", "stage2", "eval")] == [False, False, True]
    assert read_results(out / "eval" / "masks.json")["num_images"] == 2


def test_incomplete_stage_resumes_and_later_evaluation_reruns(first_run, tmp_path):
    opts = _copy(first_run[0], tmp_path / "out")
    out = Path(opts.out)
    (out / "stage2" / "masks_crf" / "img_b.png").unlink()
    cam = out / "stage2" / "cams" / "img_a.npz"
    cam_stamp = cam.stat().st_mtime_ns
    eval_stamp = (out / "eval" / "masks.json").stat().st_mtime_ns
    got = _by_name(run_pipeline(opts))
    assert not got["stage1"].ran
    assert got["stage2"].ran
    assert got["stage2"].detail == "0 images computed, 3 already done, 0 failed, 1 CRF masks written"
    assert got["eval"].ran and (out / "eval" / "masks.json").stat().st_mtime_ns != eval_stamp
    assert cam.stat().st_mtime_ns == cam_stamp
    # a lost stage-1 output: stage 1 resumes from its part files, stage 2 finds its work done
    (out / "stage1" / "tags.jsonl").unlink()
    got = _by_name(run_pipeline(opts))
    assert got["stage1"].ran and not got["stage2"].ran and (out / "stage1" / "tags.jsonl").is_file()


def test_trained_segmenter_is_skipped_without_mmseg(first_run, tmp_path):
    opts = _copy(first_run[0], tmp_path / "out")
    opts.seg_config, opts.cfg_options, opts.report_images = TINY_SEG, {"train_cfg.max_iters": 7}, 0
    final = Path(opts.out) / "stage3" / "iter_7.pth"
    final.parent.mkdir()
    final.write_bytes(b"")
    statuses = run_pipeline(opts)
    assert [s.name for s in statuses] == ["stage1", "stage2", "eval", "stage3"]  # no report asked for
    assert not statuses[-1].ran and statuses[-1].detail == f"{final} exists"
    opts.skip_train = True
    assert run_pipeline(opts)[-1].detail == "--skip-train given"


@pytest.mark.parametrize("extra, message", [
    (["--gt-masks", "{gt}"], "--gt-masks needs --dataset (its evaluation protocol gives the label names)"),
    (["--dataset", "voc2012", "--gt-masks", "{gt}_missing"], "_missing: --gt-masks folder not found"),
    (["--dataset", "voc2012", "--seg-config", "nope.py"], "nope.py: --seg-config file not found"),
])
def test_cli_refuses_bad_options_up_front(dataset, tmp_path, monkeypatch, capsys, extra, message):
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\n")
    extra = [a.format(gt=dataset / "gt") for a in extra]
    if "--dataset" not in extra:
        extra = ["--classes", str(classes), *extra]
    monkeypatch.setattr(sys, "argv", [TOOL, "--img-root", str(dataset / "images"), "--out", str(tmp_path / "o"),
                                      *extra])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(TOOL, run_name="__main__")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing ran


def test_trains_then_resumes_the_segmenter(tiny_checkpoint, tmp_path):
    pytest.importorskip("mmcv.ops")
    from wsss.seg.synthetic import write_synthetic_voc

    root = write_synthetic_voc(tmp_path / "voc", num_train=6, num_val=2, seed=1)
    opts = PipelineOptions(img_root=str(root / "JPEGImages"), out=str(tmp_path / "out"), dataset="voc2012",
                           split=str(root / "ImageSets/Segmentation/train_aug.txt"), pretrained=tiny_checkpoint,
                           crf_workers=0, gt_masks=str(root / "SegmentationClass"), seg_config=TINY_SEG,
                           data_root=str(root), cache_dir=str(tmp_path / "text_cache"), progress=False,
                           cfg_options={"train_cfg.max_iters": 4, "train_cfg.val_interval": 4,
                                        "default_hooks.checkpoint.interval": 2,
                                        "train_dataloader.batch_size": 2})
    got = _by_name(run_pipeline(opts))
    work = tmp_path / "out" / "stage3"
    labels = sorted((tmp_path / "out" / "stage2" / "masks_crf_conf0.95").glob("*.png"))
    assert len(labels) == 6  # the confidence-guided labels it trained on
    assert got["stage3"].ran and got["stage3"].detail == f"trained to {work / 'iter_4.pth'}"
    results_val = read_results(work / "results_val.json")
    assert results_val["iteration"] == 4 and results_val["split"] == "val" and results_val["num_images"] == 2
    assert (tmp_path / "out" / "report.html").read_text().count('<div class="miou">') == 3
    assert not _by_name(run_pipeline(opts))["stage3"].ran
    opts.cfg_options = {**opts.cfg_options, "train_cfg.max_iters": 6, "train_cfg.val_interval": 6}
    got = _by_name(run_pipeline(opts))
    assert got["stage3"].ran and got["stage3"].detail.endswith("(resumed)")
    import torch

    assert torch.load(work / "iter_6.pth", map_location="cpu")["meta"]["iter"] == 6
    newest_log = sorted(work.glob("*/*.log"))[-1].read_text()
    assert "resumed" in newest_log and "iter: 4" in newest_log


def test_training_labels_are_confidence_guided_and_evaluated_masks_keep_every_pixel(first_run, dataset, tmp_path):
    """CLIP-ES trains on the CRF labels with pixels below CRF confidence 0.95 set to 255
    (eval_cam_with_crf.py), while the pseudo masks it scores keep every pixel: masks_crf/ against
    the published pydensecrf computation without a threshold, masks_crf_conf0.95/ with it."""
    from PIL import Image

    from test_gen_pseudo_masks import published_crf_labels
    from wsss.apps import pipeline

    opts = _copy(first_run[0], tmp_path / "out")
    assert opts.ignore_below == 0.95  # the published default
    layout = pipeline.PipelineLayout(Path(opts.out))
    preset = pipeline.make_preset("voc2012")
    resolved = pipeline.MaskChoices.resolve(opts, preset)
    status = pipeline._confident_labels(opts, layout, preset, resolved)
    assert status.ran and status.detail.startswith("3 written, 0 already")
    assert pipeline.training_labels(opts, layout) == layout.stage2.root / "masks_crf_conf0.95"
    ignored = 0
    for image_id in SIZES:
        with np.load(layout.stage2.cam(image_id)) as data:
            keys, cams = data["keys"].tolist(), data["cams"]
        rgb = np.asarray(Image.open(dataset / "images" / f"{image_id}.jpg").convert("RGB"))
        every_pixel = read_label_png(layout.stage2.crf(image_id))
        confident = read_label_png(layout.stage2.confident(image_id, 0.95))
        assert (every_pixel == published_crf_labels(rgb, keys, cams, None)).mean() >= 0.995
        assert (confident == published_crf_labels(rgb, keys, cams, 0.95)).mean() >= 0.995
        assert not (every_pixel == 255).any()
        assert ((confident == every_pixel) | (confident == 255)).all()
        ignored += int((confident == 255).sum())
    assert ignored > 0  # the tiny random CLIP leaves some pixels unsure
    assert not pipeline._confident_labels(opts, layout, preset, resolved).ran  # resumable
    opts.ignore_below = None
    assert pipeline.training_labels(opts, layout) == layout.stage2.root / "masks_crf"


def test_a_bad_training_threshold_is_refused_before_stage_1(dataset, tmp_path):
    """The training labels' threshold is checked with every stage-2 choice up front, not after
    stages 1 and 2 have run."""
    from tagclip_cls.runtime.errors import UserError

    opts = PipelineOptions(img_root=str(dataset / "images"), out=str(tmp_path / "out"), dataset="voc2012",
                           pretrained="unused.pt", ignore_below=1.5, progress=False)
    with pytest.raises(UserError, match="ignore-below"):
        run_pipeline(opts)
    assert not (tmp_path / "out").exists()
