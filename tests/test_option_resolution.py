"""The API and the tools resolve every option of a CLIP stage to the same value, on a CPU and on a
GPU: ``Tagger.from_pretrained`` against ``tools/gen_tags.py``, ``MaskGenerator.from_pretrained``
(and ``from_tagger``) against ``tools/gen_pseudo_masks.py``.

No GPU is needed: each path runs for real up to the point where the model would load, and the
resolved options are caught there (the tools see a GPU that ``no_gpu_visible`` and
``torch.cuda.is_available`` pretend to have). The device-dependent values are also compared with
the documented choices written out below, so that both paths drifting together fails too."""
from __future__ import annotations

import dataclasses
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tagclip_cls.runtime.arguments as arguments
import tagclip_cls.tagging.api as tag_api
import tagclip_cls.tagging.run as tag_run
import wsss.masks.api as mask_api
import wsss.masks.run as mask_run
from conftest import write_image
from tagclip_cls.core.presets import make_preset
from tagclip_cls.runtime.overlap import cores_per_rank
from tagclip_cls.tagging.api import TagChoices, Tagger
from wsss.apps.pipeline import PipelineOptions
from wsss.masks.api import MaskChoices, MaskGenerator

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ["cpu", "cuda"]
#: the documented device defaults (README, --help): (attention, batching, loader threads, CRF backend)
EXPECTED = {"cpu": ("exact", "grid", 0, "pydensecrf"),
            "cuda": ("fused", "mixed", max(2, cores_per_rank() // 2), "torch")}


class Captured(Exception):
    """Raised where the model would load, carrying the resolved options."""

    def __init__(self, options):
        super().__init__()
        self.options = options


def capture(*args, **kwargs):
    raise Captured(next(a for a in (*args, *kwargs.values()) if isinstance(a, (tag_api.TagOptions,
                                                                               mask_api.MaskOptions))))


@pytest.fixture()
def pretend_gpu(monkeypatch):
    """The tools' device checks see a GPU; nothing ever runs on it."""
    monkeypatch.setattr(arguments, "no_gpu_visible", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture()
def inputs(tmp_path) -> SimpleNamespace:
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (32, 32))
    tags = tmp_path / "tags.txt"
    tags.write_text("a cat\n")
    return SimpleNamespace(images=str(images), tags=str(tags), out=str(tmp_path / "out"))


def fake_clip(device: str) -> SimpleNamespace:
    clip = SimpleNamespace(device=torch.device(device), num_layers=12)
    clip.fp16_rounded = lambda: clip
    return clip


def run_tool(name: str, args: list[str], monkeypatch):
    """The options the tool resolved on its way to loading the model."""
    tool = str(ROOT / "tools" / name)
    monkeypatch.setattr(sys, "argv", [tool, *args, "--no-progress", "--log-level", "WARNING"])
    with pytest.raises(Captured) as caught:
        runpy.run_path(tool, run_name="__main__")
    return caught.value.options


def tool_tag_options(device, inputs, monkeypatch):
    monkeypatch.setattr(tag_run, "load_clip", lambda model, pretrained, dev: fake_clip(str(dev)))
    monkeypatch.setattr(tag_run, "Tagger", capture)
    return run_tool("gen_tags.py", ["--img-root", inputs.images, "--dataset", "voc2007", "--out", inputs.out,
                                    "--device", device], monkeypatch)


def tool_mask_options(device, inputs, monkeypatch):
    monkeypatch.setattr(mask_run, "share_cpu_threads", lambda threads: None)  # the test process keeps its threads
    monkeypatch.setattr(mask_run, "build_generator", capture)
    return run_tool("gen_pseudo_masks.py", ["--img-root", inputs.images, "--tags", inputs.tags, "--dataset",
                                            "voc2012", "--out", inputs.out, "--device", device], monkeypatch)


def api_tag_options(device, monkeypatch):
    monkeypatch.setattr(tag_api, "load_clip", lambda model, pretrained, dev: fake_clip(str(dev)))
    monkeypatch.setattr(Tagger, "__init__", capture)
    with pytest.raises(Captured) as caught:
        Tagger.from_pretrained("unused", preset="voc2007", device=device)
    return caught.value.options


def api_mask_options(device, monkeypatch):
    monkeypatch.setattr(mask_api, "load_clip", lambda model, pretrained, dev, fp16_weights: fake_clip(str(dev)))
    monkeypatch.setattr(MaskGenerator, "__init__", capture)
    with pytest.raises(Captured) as caught:
        MaskGenerator.from_pretrained("unused", preset="voc2012", device=device)
    return caught.value.options


def leaves(options, prefix: str = "") -> dict:
    """Every resolved value by its dotted name (nested option groups flattened)."""
    found = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if dataclasses.is_dataclass(value):
            found.update(leaves(value, f"{prefix}{f.name}."))
        else:
            found[prefix + f.name] = value
    return found


def assert_same(api, tool) -> None:
    api, tool = leaves(api), leaves(tool)
    assert api.keys() == tool.keys()
    for name in api:
        assert api[name] == tool[name], f"{name}: the API resolves {api[name]!r}, the tool {tool[name]!r}"


def agreed_options(stage: int, device: str, inputs, monkeypatch):
    """Stage ``stage``'s options as the API resolves them, once checked equal to the tool's and
    its runtime to the documented device defaults."""
    if stage == 1:
        tool, api = tool_tag_options(device, inputs, monkeypatch), api_tag_options(device, monkeypatch)
    else:
        tool, api = tool_mask_options(device, inputs, monkeypatch), api_mask_options(device, monkeypatch)
    assert_same(api, tool)
    attention, batching, threads, _ = EXPECTED[device]
    assert (api.runtime.device, api.runtime.precision) == (device, "fp32")
    assert (api.runtime.attention, api.runtime.batching, api.runtime.loader_threads) == (attention, batching, threads)
    return api


@pytest.mark.parametrize("device", DEVICES)
def test_stage1_api_and_tool_agree(device, inputs, pretend_gpu, monkeypatch):
    api = agreed_options(1, device, inputs, monkeypatch)
    assert (api.method, api.round_fp16_pos, api.max_side) == ("tagclip", True, 1024)


@pytest.mark.parametrize("device", DEVICES)
def test_stage2_api_and_tool_agree(device, inputs, pretend_gpu, monkeypatch):
    api = agreed_options(2, device, inputs, monkeypatch)
    assert (api.cam.attention, api.cam.precision, api.cam.grad_mode, api.cam.round_fp16_pos) == \
        (EXPECTED[device][0], "fp32", "loop", True)
    assert (api.cam.box_threshold, tuple(api.cam.affinity_layers)) == (0.4, (-8, -1))  # VOC's published constants
    assert (api.crf.backend, api.crf.device, api.crf.image_mode, api.crf.ignore_below) == \
        (EXPECTED[device][3], device, "published", None)


@pytest.mark.parametrize("device", DEVICES)
def test_stage2_from_tagger_resolves_as_the_tool(device, inputs, pretend_gpu, monkeypatch):
    """``from_tagger`` resolves for the tagger's device, as the tool for ``--device``."""
    tool = tool_mask_options(device, inputs, monkeypatch)
    tagger = SimpleNamespace(clip=fake_clip(device), preset=make_preset("voc2012"), cache_dir=None)
    monkeypatch.setattr(MaskGenerator, "__init__", capture)
    with pytest.raises(Captured) as caught:
        MaskGenerator.from_tagger(tagger)
    assert_same(caught.value.options, tool)


@pytest.mark.parametrize("device", DEVICES)
def test_given_choices_resolve_alike(device, inputs, pretend_gpu, monkeypatch):
    """Choices given to both paths (the other way round from the GPU defaults) stay as given."""
    monkeypatch.setattr(mask_run, "share_cpu_threads", lambda threads: None)
    monkeypatch.setattr(mask_run, "build_generator", capture)
    tool = run_tool("gen_pseudo_masks.py", [
        "--img-root", inputs.images, "--tags", inputs.tags, "--dataset", "voc2012", "--out", inputs.out,
        "--device", device, "--attention", "exact", "--batching", "grid", "--loader-threads", "3",
        "--crf-backend", "pydensecrf", "--crf-image", "rgb", "--box-threshold", "0.5", "--affinity-layers=-6:",
        "--no-fp16-pos", "--max-side", "512", "--grad-mode", "batched", "--crf", "--ignore-below", "0.9"],
        monkeypatch)
    monkeypatch.setattr(mask_api, "load_clip", lambda model, pretrained, dev, fp16_weights: fake_clip(str(dev)))
    monkeypatch.setattr(MaskGenerator, "__init__", capture)
    with pytest.raises(Captured) as caught:
        MaskGenerator.from_pretrained("unused", preset="voc2012", device=device, attention="exact", batching="grid",
                                      loader_threads=3, crf_backend="pydensecrf", crf_image="rgb",
                                      box_threshold=0.5, affinity_layers=(-6, None), no_fp16_pos=True,
                                      max_side=512, grad_mode="batched", ignore_below=0.9)
    assert_same(caught.value.options, tool)
    assert (tool.runtime.attention, tool.crf.backend, tool.runtime.loader_threads) == ("exact", "pydensecrf", 3)


def test_the_stages_share_the_defaults_of_their_common_options():
    """The pipeline passes one value of ``--precision``, ``--max-side``, ... to both stages: their
    defaults must be one."""
    tag = {f.name: f.default for f in dataclasses.fields(TagChoices)}
    mask = {f.name: f.default for f in dataclasses.fields(MaskChoices)}
    common = tag.keys() & mask.keys()
    assert {"device", "precision", "attention", "batching", "loader_threads", "max_side", "max_pixels",
            "no_fp16_pos"} <= common
    assert {name: tag[name] for name in common} == {name: mask[name] for name in common}
    pipeline = {f.name: f.default for f in dataclasses.fields(PipelineOptions)}
    # the pipeline's own ignore_below is its training labels' (CLIP-ES's 0.95); stage 2 gets None
    assert pipeline.pop("ignore_below") == 0.95 and mask.pop("ignore_below") is None
    assert {name: pipeline[name] for name in tag} == tag and {name: pipeline[name] for name in mask} == mask
