"""The Python API gives the tools' numbers: scores within 1e-6 of tags.jsonl, masks byte-identical
to the PNGs; and the README's "Python API" snippet runs."""
from __future__ import annotations

import json
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tagclip_cls import Tagger, TagResult
from tagclip_cls.core.presets import make_preset
from tagclip_cls.runtime.errors import UserError
from wsss import MaskGenerator

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent


def run_tool(tool: str, args: list, monkeypatch) -> None:
    path = str(ROOT / "tools" / tool)
    monkeypatch.setattr(sys, "argv", [path, *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(path, run_name="__main__")
    assert exc.value.code == 0


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("text_cache")


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    write_image(root / "grey.png", (70, 90), "L", seed=1)
    write_image(root / "wide.jpg", (64, 100), seed=3)
    write_image(root / "rgba.png", (83, 61), "RGBA", seed=2)
    return root


def test_tagger_matches_gen_tags(tmp_path, photos, tiny_checkpoint, cache, monkeypatch):
    out = tmp_path / "tags"
    run_tool("gen_tags.py", ["--img-root", photos, "--dataset", "voc2007", "--pretrained", tiny_checkpoint,
                             "--cache-dir", cache, "--out", out, "--no-progress", "--batch-size", "2"], monkeypatch)
    records = [json.loads(line) for line in (out / "tags.jsonl").read_text().splitlines()]
    tagger = Tagger.from_pretrained(tiny_checkpoint, preset="voc2007", cache_dir=cache)
    inputs = {"grey": photos / "grey.png", "wide": Image.open(photos / "wide.jpg"),
              "rgba": np.asarray(Image.open(photos / "rgba.png").convert("RGB"))}
    # an RGBA file is resized before it is converted (as published): the array route differs there
    expected_same = {"grey", "wide"}
    results = tagger([inputs[r["id"]] for r in records])
    assert len(results) == len(records) == 3
    for record, result in zip(records, results):
        assert isinstance(result, TagResult)
        assert result.scores.shape == (20,)
        if record["id"] in expected_same:
            assert np.abs(result.scores - np.array(record["scores"])).max() < 1e-6
            assert list(result.tags) == record["tags"]
            assert list(result.names) == record["tag_names"]
    assert list(tagger(photos / "rgba.png").tags) == records[1]["tags"]  # the path route: identical
    single = tagger(photos / "rgba.png")
    assert np.abs(single.scores - np.array(records[1]["scores"])).max() < 1e-6


def test_masks_match_gen_pseudo_masks(tmp_path, photos, tiny_checkpoint, cache, monkeypatch):
    tags = tmp_path / "tags.txt"
    tags.write_text("grey cat dog\nwide person\nrgba\n")
    out = tmp_path / "masks"
    run_tool("gen_pseudo_masks.py", ["--img-root", photos, "--tags", tags, "--dataset", "voc2012", "--pretrained",
                                     tiny_checkpoint, "--cache-dir", cache, "--out", out, "--crf", "--ignore-below",
                                     "0.9", "--no-progress"], monkeypatch)
    tagger = Tagger.from_pretrained(tiny_checkpoint, preset="voc2007", cache_dir=cache)
    generator = MaskGenerator.from_tagger(tagger, preset="voc2012", ignore_below=0.9)
    # float32 weights: stage 2 runs on an fp16-rounded copy in memory, as CLIP-ES's loader rounds them
    assert generator.clip is not tagger.clip and generator.clip.tokenizer is tagger.clip.tokenizer
    for image_id, file, tag_list in (("grey", "grey.png", ["cat", "dog"]), ("wide", "wide.jpg", [14]),
                                     ("rgba", "rgba.png", [])):
        result = generator(photos / file, tags=tag_list)
        with np.load(out / "cams" / f"{image_id}.npz") as data:
            assert list(result.keys) == data["keys"].tolist()
            assert np.array_equal(result.stored_cams, data["cams"])
        assert result.cams.dtype == np.float32 and result.cams.shape[0] == len(tag_list)
        if len(tag_list):
            assert 0 <= result.cams.min() and result.cams.max() <= 1
        assert np.array_equal(result.label_map, np.asarray(Image.open(out / "masks" / f"{image_id}.png")))
        assert np.array_equal(result.crf(), np.asarray(Image.open(out / "masks_crf" / f"{image_id}.png")))
    with pytest.raises(UserError, match="unknown class 'unicorn'"):
        generator(photos / "grey.png", tags=["unicorn"])


def test_own_classes_and_errors(tiny_clip, tmp_path, cache):
    tagger = Tagger(tiny_clip, make_preset(classes=["cat", "coffee cup"], background=["sky"]), cache_dir=cache)
    result = tagger(np.zeros((40, 50, 3), np.uint8))
    assert result.scores.shape == (2,) and set(result.names) <= {"cat", "coffee cup"}
    with pytest.raises(UserError, match="clashes with 'coffee cup'"):
        Tagger.from_pretrained("unused", classes=["coffee cup", "coffee_cup"])
    with pytest.raises(UserError, match="not both|own classes"):
        Tagger.from_pretrained("unused", preset="voc2007", classes=["cat"])
    with pytest.raises(ValueError, match="uint8"):
        tagger(np.zeros((4, 4, 3), np.float32))


def test_attention_choice_reaches_both_stages(tiny_clip, cache):
    tagger = Tagger(tiny_clip, make_preset("voc2007"), cache_dir=cache, attention="fused")
    assert tagger.model.config.attention == "fused"
    assert MaskGenerator.from_tagger(tagger, preset="voc2012", attention="fused").model.config.attention == "fused"
    assert MaskGenerator.from_tagger(tagger, preset="voc2012").model.config.attention == "exact"


def test_cams_batch_equals_cams_one_by_one(tiny_clip, cache):
    """Two images of one size and one of another (padded, masked) in one call."""
    generator = MaskGenerator.from_tagger(Tagger(tiny_clip, make_preset("voc2007"), cache_dir=cache), preset="voc2012")
    rng = np.random.default_rng(0)
    images = [generator.prepare(rng.integers(0, 255, shape, dtype=np.uint8))
              for shape in [(40, 52, 3), (40, 52, 3), (70, 30, 3), (20, 20, 3)]]
    tags = [[0, 14], [6], [2, 6], []]
    together = generator.cams_batch(images, tags)
    for image, image_tags, cams in zip(images, tags, together):
        assert cams.shape == (len(image_tags), *image.orig_size)
        np.testing.assert_allclose(cams, generator.cams(image, image_tags), atol=1e-4, rtol=0)


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_snippet_runs(tmp_path, photos, tiny_checkpoint, cache, monkeypatch):
    monkeypatch.setenv("TAGCLIP_CACHE", str(cache))
    scope = {"WEIGHTS": tiny_checkpoint, "IMAGE": str(photos / "wide.jpg")}
    exec(compile(readme_snippet(), "README.md", "exec"), scope)
    assert isinstance(scope["result"], TagResult)
    assert scope["out"].label_map.shape == (64, 100)


def test_fp16_valued_weights_are_shared_not_copied(tiny_state_dict, tmp_path):
    from tagclip_cls.core.models import load_clip

    path = tmp_path / "fp16.pt"
    torch.save({k: v.half().float() if v.is_floating_point() else v for k, v in tiny_state_dict.items()}, path)
    clip = load_clip(None, str(path))
    assert clip.fp16_rounded() is clip
