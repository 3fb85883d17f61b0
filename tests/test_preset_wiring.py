"""The preset constants reach the code: the own-class preset holds the published VOC constants, and
for it and every named preset the stage-1 ``TagConfig`` and the stage-2 ``CamConfig`` and label
space are the preset's, through the Python API and through the tools' recorded run configs
(``parts/run_config.json``, ``config.json``); an explicit override wins over the preset.

The expected values are written out here, independently of ``presets.py`` and
``data/presets/*.json`` (tests/test_presets.py checks the JSON files themselves)."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagclip_cls.core.presets import make_preset
from tagclip_cls.core.text import load_templates
from tagclip_cls.tagging import api as tagging_api
from tagclip_cls.tagging.api import Tagger
from wsss.masks.api import MaskGenerator
from wsss.masks.label_maps import LabelSpace

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent
GEN_TAGS = str(ROOT / "tools" / "gen_tags.py")
GEN_MASKS = str(ROOT / "tools" / "gen_pseudo_masks.py")

# the published code's constants: TagCLIP DMAR layers L-4..L-2, CWR and tag ratios 0.5 (COCO-Stuff:
# all layers but the last, 0.1); CLIP-ES VOC affinity layers L-8..L-2 with boxes at 0.4, COCO and
# COCO-Stuff L-8..L-1 with boxes at 0.7. A preset for one's own classes takes VOC's.
VOC = dict(dmar_layers=(-4, -1), cwr_ratio=0.5, tag_ratio=0.5, affinity_layers=(-8, -1), box_threshold=0.4,
           label_space="background+classes")
COCO = dict(dmar_layers=(-4, -1), cwr_ratio=0.5, tag_ratio=0.5, affinity_layers=(-8, None), box_threshold=0.7,
            label_space="background+classes")
COCOSTUFF = dict(dmar_layers=(0, -1), cwr_ratio=0.1, tag_ratio=0.1, affinity_layers=(-8, None), box_threshold=0.7,
                 label_space="coarse27")
NAMED = {"voc2007": VOC, "voc2012": VOC, "coco2014": COCO, "coco2017": COCO, "cocostuff": COCOSTUFF}
NUM_CLASSES = {"voc2007": 20, "voc2012": 20, "coco2014": 80, "coco2017": 80, "cocostuff": 171}

OWN_CLASSES = ["cat", "coffee cup", "rocket"]
OWN_BACKGROUND = ["sky", "grass"]


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory) -> str:
    """One text-feature cache for the module: each class list is encoded once."""
    return str(tmp_path_factory.mktemp("text_cache"))


@pytest.fixture()
def few_templates(monkeypatch):
    """Stage 1 encodes two prompt templates instead of all of them: the text features don't touch
    the constants, and COCO-Stuff's 171 classes in every template take half a minute on a small CPU."""
    monkeypatch.setattr(tagging_api, "load_templates", lambda: load_templates()[:2])


def expected_space(spec: dict, num_classes: int) -> LabelSpace:
    if spec["label_space"] == "background+classes":
        return LabelSpace(True, tuple(range(1, num_classes + 1)), num_classes + 1)
    assert spec["label_space"] == "coarse27"
    return LabelSpace(False, tuple(make_preset("cocostuff").clip_es.class_to_coarse27), 27)


def assert_tag_config(config, spec: dict) -> None:
    assert tuple(config.dmar_layers) == spec["dmar_layers"]
    assert config.cwr_ratio == spec["cwr_ratio"]
    assert config.tag_ratio == spec["tag_ratio"]
    assert config.dmar and config.cwr  # method "tagclip": both switches on


def assert_cam_config(config, spec: dict) -> None:
    assert tuple(config.affinity_layers) == spec["affinity_layers"]
    assert config.box_threshold == spec["box_threshold"]


# --------------------------------------------------------------------------- the own-class preset

@pytest.mark.parametrize("how", ["names", "file"])
def test_own_class_preset_has_the_published_voc_constants(tmp_path, how):
    if how == "names":
        preset = make_preset(classes=OWN_CLASSES, background=OWN_BACKGROUND)
    else:
        (tmp_path / "mine.txt").write_text("".join(c + "\n" for c in OWN_CLASSES))
        (tmp_path / "bg.txt").write_text("".join(c + "\n" for c in OWN_BACKGROUND))
        preset = make_preset(classes=tmp_path / "mine.txt", background=str(tmp_path / "bg.txt"))
    assert preset.classes == tuple(OWN_CLASSES) and preset.background_words == tuple(OWN_BACKGROUND)
    assert preset.dmar_layers == (-4, -1)
    assert preset.cwr_ratio == 0.5
    assert preset.tag_ratio == 0.5
    es = preset.clip_es
    assert es.affinity_layers == (-8, -1)
    assert es.box_threshold == 0.4
    assert es.label_space == "background+classes"
    assert es.cam_names == tuple(OWN_CLASSES) and es.background_words == tuple(OWN_BACKGROUND)
    assert es.class_to_coarse27 == ()  # no coarse mapping for a plain label space
    # and the same as the VOC presets' constants
    voc = make_preset("voc2012")
    assert (preset.dmar_layers, preset.cwr_ratio, preset.tag_ratio) == (voc.dmar_layers, voc.cwr_ratio, voc.tag_ratio)
    assert (es.affinity_layers, es.box_threshold, es.label_space) == (
        voc.clip_es.affinity_layers, voc.clip_es.box_threshold, voc.clip_es.label_space)


def test_own_class_preset_reaches_tagger_and_mask_generator(tiny_checkpoint, tmp_path):
    tagger = Tagger.from_pretrained(tiny_checkpoint, classes=OWN_CLASSES, background=OWN_BACKGROUND,
                                    cache_dir=tmp_path)
    assert_tag_config(tagger.model.config, VOC)
    generator = MaskGenerator.from_pretrained(tiny_checkpoint, classes=OWN_CLASSES, background=OWN_BACKGROUND,
                                              cache_dir=tmp_path)
    assert_cam_config(generator.model.config, VOC)
    assert generator.space == expected_space(VOC, len(OWN_CLASSES))
    assert generator.space == LabelSpace(True, (1, 2, 3), 4)
    shared = MaskGenerator.from_tagger(tagger)  # the tagger's own-class preset, shared CLIP
    assert_cam_config(shared.model.config, VOC)
    assert shared.space == LabelSpace(True, (1, 2, 3), 4)


def test_overrides_win_over_the_own_class_preset(tiny_checkpoint, tmp_path):
    generator = MaskGenerator.from_pretrained(tiny_checkpoint, classes=OWN_CLASSES, background=OWN_BACKGROUND,
                                              cache_dir=tmp_path, box_threshold=0.55, affinity_layers=(-6, None))
    assert generator.model.config.box_threshold == 0.55
    assert tuple(generator.model.config.affinity_layers) == (-6, None)
    only_box = MaskGenerator.from_pretrained(tiny_checkpoint, classes=OWN_CLASSES, cache_dir=tmp_path,
                                             box_threshold=0.3)
    assert only_box.model.config.box_threshold == 0.3
    assert tuple(only_box.model.config.affinity_layers) == (-8, -1)  # the one not given: the preset's
    tagger = Tagger.from_pretrained(tiny_checkpoint, classes=OWN_CLASSES, background=OWN_BACKGROUND,
                                    cache_dir=tmp_path)
    shared = MaskGenerator.from_tagger(tagger, box_threshold=0.65, affinity_layers=(-5, -2))
    assert shared.model.config.box_threshold == 0.65
    assert tuple(shared.model.config.affinity_layers) == (-5, -2)


# --------------------------------------------------------------------------- the named presets

@pytest.mark.parametrize("name", list(NAMED))
def test_named_preset_reaches_tagger_and_mask_generator(tiny_clip, text_cache, few_templates, name):
    spec, preset = NAMED[name], make_preset(name)
    assert preset.num_classes == NUM_CLASSES[name]
    assert_tag_config(Tagger(tiny_clip, preset, cache_dir=text_cache).model.config, spec)
    generator = MaskGenerator(tiny_clip, preset, cache_dir=text_cache)  # no config: the preset's
    assert_cam_config(generator.model.config, spec)
    assert generator.space == expected_space(spec, NUM_CLASSES[name])
    overridden = MaskGenerator(tiny_clip, preset, box_threshold=0.25, affinity_layers=(-3, None),
                               cache_dir=text_cache)
    assert overridden.model.config.box_threshold == 0.25
    assert tuple(overridden.model.config.affinity_layers) == (-3, None)
    assert overridden.space == generator.space  # the label space stays the preset's


@pytest.mark.parametrize("name", ["voc2012", "cocostuff"])
def test_named_preset_through_from_pretrained(tiny_checkpoint, text_cache, few_templates, name):
    spec = NAMED[name]
    generator = MaskGenerator.from_pretrained(tiny_checkpoint, preset=name, cache_dir=text_cache)
    assert_cam_config(generator.model.config, spec)
    assert generator.space == expected_space(spec, NUM_CLASSES[name])
    overridden = MaskGenerator.from_pretrained(tiny_checkpoint, preset=name, cache_dir=text_cache,
                                               box_threshold=0.15, affinity_layers=(-7, -2))
    assert overridden.model.config.box_threshold == 0.15
    assert tuple(overridden.model.config.affinity_layers) == (-7, -2)
    tagger = Tagger.from_pretrained(tiny_checkpoint, preset=name, cache_dir=text_cache)
    assert_tag_config(tagger.model.config, spec)


# --------------------------------------------------------------------------- the tools' run configs

def run_tool(tool: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run a tool in this process; returns (exit status, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", [tool, *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(tool, run_name="__main__")
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


@pytest.fixture()
def own_inputs(tmp_path, tiny_checkpoint, text_cache):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (48, 64), seed=1)
    write_image(images / "b.jpg", (40, 56), seed=2)
    classes = tmp_path / "mine.txt"
    classes.write_text("".join(c + "\n" for c in OWN_CLASSES))
    background = tmp_path / "bg.txt"
    background.write_text("".join(c + "\n" for c in OWN_BACKGROUND))
    common = ["--img-root", str(images), "--classes", str(classes), "--background", str(background),
              "--pretrained", tiny_checkpoint, "--cache-dir", text_cache, "--no-progress", "--log-level", "WARNING"]
    return tmp_path, common


def test_gen_tags_records_the_own_class_constants(own_inputs, monkeypatch, capsys):
    tmp_path, common = own_inputs
    out = tmp_path / "tags"
    code, text = run_tool(GEN_TAGS, [*common, "--out", str(out)], monkeypatch, capsys)
    assert code == 0, text
    record = json.loads((out / "parts" / "run_config.json").read_text())
    assert record["classes"] == OWN_CLASSES and record["background_words"] == OWN_BACKGROUND
    config = record["config"]
    assert config["dmar_layers"] == [-4, -1]
    assert config["cwr_ratio"] == 0.5
    assert config["tag_ratio"] == 0.5
    assert config["dmar"] is True and config["cwr"] is True and config["precision"] == "fp32"


def _masks(tmp_path: Path, common: list[str], extra: list[str], monkeypatch, capsys, out_name: str) -> Path:
    tags = tmp_path / "tags.txt"
    tags.write_text("a cat coffee_cup\nb rocket\n")
    out = tmp_path / out_name
    code, text = run_tool(GEN_MASKS, [*common, "--tags", str(tags), "--out", str(out), *extra], monkeypatch, capsys)
    assert code == 0, text
    return out


def test_gen_pseudo_masks_records_the_own_class_constants(own_inputs, monkeypatch, capsys):
    tmp_path, common = own_inputs
    out = _masks(tmp_path, common, [], monkeypatch, capsys, "masks")
    record = json.loads((out / "config.json").read_text())
    assert record["classes"] == OWN_CLASSES and record["cam_names"] == OWN_CLASSES
    assert record["background_words"] == OWN_BACKGROUND
    cam = record["cam"]
    assert cam["box_threshold"] == 0.4
    assert cam["affinity_layers"] == [-8, -1]
    assert cam["precision"] == "fp32"
    # the label space: background 0, class index + 1
    for image_id, keys in (("a", [0, 1]), ("b", [2])):
        with np.load(out / "cams" / f"{image_id}.npz") as data:
            assert data["keys"].tolist() == keys
        with Image.open(out / "masks" / f"{image_id}.png") as png:
            assert set(np.unique(np.asarray(png)).tolist()) <= {0, *(k + 1 for k in keys)}


def test_gen_pseudo_masks_options_override_the_preset(own_inputs, monkeypatch, capsys):
    tmp_path, common = own_inputs
    out = _masks(tmp_path, common, ["--box-threshold", "0.55", "--affinity-layers=-6:"], monkeypatch, capsys,
                 "masks_override")
    cam = json.loads((out / "config.json").read_text())["cam"]
    assert cam["box_threshold"] == 0.55
    assert cam["affinity_layers"] == [-6, None]
    only_box = _masks(tmp_path, common, ["--box-threshold", "0.3"], monkeypatch, capsys, "masks_box")
    cam = json.loads((only_box / "config.json").read_text())["cam"]
    assert cam["box_threshold"] == 0.3
    assert cam["affinity_layers"] == [-8, -1]  # the one not given: the preset's


def test_tools_record_a_named_presets_constants(tmp_path, tiny_checkpoint, text_cache, few_templates, monkeypatch,
                                                capsys):
    """COCO-Stuff's constants differ from every default (DMAR layers, both ratios, the affinity
    layers, the box threshold, the label space), so a tool that built its configs from the
    defaults instead of the preset fails here. (``few_templates`` reaches the in-process tool.)"""
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (48, 64), seed=1)
    common = ["--img-root", str(images), "--dataset", "cocostuff", "--pretrained", tiny_checkpoint,
              "--cache-dir", text_cache, "--no-progress", "--log-level", "WARNING"]
    code, text = run_tool(GEN_TAGS, [*common, "--out", str(tmp_path / "tags")], monkeypatch, capsys)
    assert code == 0, text
    config = json.loads((tmp_path / "tags" / "parts" / "run_config.json").read_text())["config"]
    assert (config["dmar_layers"], config["cwr_ratio"], config["tag_ratio"]) == ([0, -1], 0.1, 0.1)
    tags = tmp_path / "tags.txt"
    tags.write_text("a person grass\n")
    out = tmp_path / "masks"
    code, text = run_tool(GEN_MASKS, [*common, "--tags", str(tags), "--out", str(out)], monkeypatch, capsys)
    assert code == 0, text
    cam = json.loads((out / "config.json").read_text())["cam"]
    assert (cam["box_threshold"], cam["affinity_layers"]) == (0.7, [-8, None])
    with Image.open(out / "masks" / "a.png") as png:  # coarse-27 ids: person 9, grass 22, no background
        assert set(np.unique(np.asarray(png)).tolist()) <= {9, 22}
