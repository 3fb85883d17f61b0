"""run_pipeline forwards every option of both CLIP stages: a new stage option that the pipeline
does not carry, or drops on the way, fails here."""
from __future__ import annotations

import dataclasses
import runpy
import sys
from pathlib import Path

import pytest

import wsss.apps.pipeline as pipeline
from conftest import write_image
from tagclip_cls.tagging.run import TagRunOptions
from wsss.apps.pipeline import PipelineLayout, PipelineOptions
from wsss.masks.run import MaskRunOptions

ROOT = Path(__file__).resolve().parent.parent
#: what the pipeline lays out itself, per stage
OWN = {TagRunOptions: {"out"}, MaskRunOptions: {"out", "tags", "ignore_below"}}
#: read by the pipeline before a stage runs, so given real values below
READ_BY_PIPELINE = {"img_root", "out", "split", "dataset", "classes", "background", "overwrite", "crf_masks"}


class Captured(Exception):
    pass


@pytest.mark.parametrize("stage", [TagRunOptions, MaskRunOptions])
def test_the_pipeline_carries_every_stage_option(stage):
    carried = {f.name for f in dataclasses.fields(PipelineOptions)}
    missing = {f.name for f in dataclasses.fields(stage)} - OWN[stage] - carried
    assert not missing, f"PipelineOptions lacks {stage.__name__} options {sorted(missing)}"


@pytest.mark.parametrize("stage, runner, call", [(TagRunOptions, "run_stage1", "_stage1"),
                                                 (MaskRunOptions, "run_stage2", "_stage2")])
def test_every_value_reaches_the_stage(tmp_path, monkeypatch, stage, runner, call):
    """Each forwarded option holds its own marker object; the stage must receive exactly it."""
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (32, 32))
    markers = {f.name: object() for f in dataclasses.fields(PipelineOptions) if f.name not in READ_BY_PIPELINE}
    opts = PipelineOptions(img_root=str(images), out=str(tmp_path / "run"), dataset="voc2012", **markers)
    layout = PipelineLayout(Path(opts.out))
    layout.stage1.root.mkdir(parents=True)
    layout.stage1.txt.write_text("a cat\n")
    received = {}

    def capture(options, verify_only=False):
        received["options"] = options
        raise Captured
    monkeypatch.setattr(pipeline, runner, capture)
    with pytest.raises(Captured):
        getattr(pipeline, call)(opts, layout, pipeline.make_preset("voc2012"))
    got = received["options"]
    for f in dataclasses.fields(stage):
        if f.name in markers and f.name not in OWN[stage]:
            assert getattr(got, f.name) is markers[f.name], f"{stage.__name__}.{f.name} not forwarded"
    assert got.out == str(layout.stage1.root if stage is TagRunOptions else layout.stage2.root)
    if stage is MaskRunOptions:  # the pipeline's threshold is the training labels'; masks_crf/ keep every pixel
        assert got.ignore_below is None


def test_the_tool_takes_the_stage_flags(tmp_path, monkeypatch):
    """``run_pipeline.py --max-side 320 --box-threshold 0.6 ...`` reach PipelineOptions."""
    images = tmp_path / "images"
    images.mkdir()
    received = {}

    def capture(options, on_stage=None):
        received["options"] = options
        raise SystemExit(0)
    monkeypatch.setattr(pipeline, "run_pipeline", capture)
    tool = str(ROOT / "tools" / "run_pipeline.py")
    monkeypatch.setattr(sys, "argv", [tool, "--img-root", str(images), "--dataset", "voc2012", "--out",
                                      str(tmp_path / "run"), "--max-side", "320", "--max-pixels", "5000",
                                      "--no-fp16-pos", "--loader-threads", "0", "--grad-mode", "batched",
                                      "--box-threshold", "0.6", "--affinity-layers=-6:", "--threads", "1"])
    with pytest.raises(SystemExit):
        runpy.run_path(tool, run_name="__main__")
    got = received["options"]
    assert (got.max_side, got.max_pixels, got.no_fp16_pos, got.loader_threads, got.grad_mode, got.box_threshold,
            got.affinity_layers, got.threads) == (320, 5000, True, 0, "batched", 0.6, "-6:", 1)
