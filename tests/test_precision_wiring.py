"""Stage 2's precision option reaches the model: a bf16 or fp16 ``MaskGenerator`` and
``tools/gen_pseudo_masks.py --precision bf16`` compute other CAMs than float32 (close ones), and
the tool records the precision in ``config.json``.

``check_precision`` refuses bf16/fp16 on a CPU without native support (an AVX2-only AMD, say), so
the tests give every caller a CPU with AMX-BF16 and AVX512-FP16 by patching
``tagclip_cls.runtime.precision.cpu_flags``: ``check_precision`` (imported by name in the APIs and
in ``runtime.arguments``, the same function object) looks that module global up at each call.
Autocast itself runs on any CPU (emulated where not native), so nothing is skipped."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tagclip_cls.runtime.precision as precision_module
from tagclip_cls.runtime.errors import UserError
from wsss.masks.api import MaskGenerator

from conftest import write_image
from test_gen_pseudo_masks import run_tool

NATIVE_16_BIT = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16", "amx_fp16"})
AVX2_ONLY = frozenset({"avx", "avx2", "fma"})
TAGS = [7, 14]  # voc2012: cat, person


@pytest.fixture()
def native_16_bit(monkeypatch):
    """A CPU with native bf16 and fp16 (and AMX: no slow-bf16 warning), whatever this one has."""
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: NATIVE_16_BIT)


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("text_cache"))


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("picture") / "p.png", (64, 80), seed=5)


def test_the_flag_patch_reaches_every_check(tiny_checkpoint, text_cache, monkeypatch):
    """Without native support bf16 is refused by the API and by the tool's argument check, so the
    patch in ``native_16_bit`` is what lets the tests below run on any CPU."""
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: AVX2_ONLY)
    with pytest.raises(UserError, match="no native bf16"):
        MaskGenerator.from_pretrained(tiny_checkpoint, preset="voc2012", precision="bf16", cache_dir=text_cache)
    with pytest.raises(UserError, match="no native fp16"):
        MaskGenerator.from_pretrained(tiny_checkpoint, preset="voc2012", precision="fp16", cache_dir=text_cache)
    from tagclip_cls.runtime.arguments import check_device
    with pytest.raises(UserError, match="no native bf16"):
        check_device("cpu", "bf16")
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: NATIVE_16_BIT)
    check_device("cpu", "bf16")
    check_device("cpu", "fp16")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mask_generator_precision_changes_the_cams(tiny_checkpoint, text_cache, picture, native_16_bit, precision):
    ref_gen = MaskGenerator.from_pretrained(tiny_checkpoint, preset="voc2012", cache_dir=text_cache)
    low_gen = MaskGenerator.from_pretrained(tiny_checkpoint, preset="voc2012", precision=precision,
                                            cache_dir=text_cache)
    assert ref_gen.model.config.precision == "fp32"
    assert low_gen.model.config.precision == precision
    ref, low = ref_gen(picture, TAGS), low_gen(picture, TAGS)
    assert low.cams.dtype == np.float32 and low.cams.shape == ref.cams.shape == (2, 64, 80)
    assert np.isfinite(low.cams).all()
    assert not np.array_equal(low.cams, ref.cams)  # the option reached the model
    assert np.abs(low.cams - ref.cams).mean() < 0.1  # ... and it is a rounding, not another method
    assert (low.label_map == ref.label_map).mean() > 0.9


def test_gen_pseudo_masks_precision_changes_the_cams(tmp_path, tiny_checkpoint, text_cache, native_16_bit,
                                                     monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (48, 64), seed=1)
    write_image(images / "b.jpg", (56, 40), seed=2)
    tags = tmp_path / "tags.txt"
    tags.write_text("a cat person\nb person cat\n")  # (dog: a zero CAM with the tiny weights)
    base = ["--img-root", str(images), "--tags", str(tags), "--dataset", "voc2012", "--pretrained", tiny_checkpoint,
            "--cache-dir", text_cache, "--no-progress", "--log-level", "WARNING"]
    outs = {}
    for precision in ("fp32", "bf16"):
        outs[precision] = tmp_path / precision
        code, text = run_tool([*base, "--out", str(outs[precision]), "--precision", precision], monkeypatch, capsys)
        assert code == 0, text
        assert json.loads((outs[precision] / "config.json").read_text())["cam"]["precision"] == precision
    for image_id in ("a", "b"):
        with np.load(outs["fp32"] / "cams" / f"{image_id}.npz") as ref, \
                np.load(outs["bf16"] / "cams" / f"{image_id}.npz") as low:
            assert ref["keys"].tolist() == low["keys"].tolist()
            ref_cams, low_cams = ref["cams"].astype(np.float32), low["cams"].astype(np.float32)
        assert ref_cams.shape == low_cams.shape and np.isfinite(low_cams).all()
        assert not np.array_equal(ref_cams, low_cams), image_id
        assert np.abs(low_cams - ref_cams).mean() < 0.1
        with Image.open(outs["fp32"] / "masks" / f"{image_id}.png") as a, \
                Image.open(outs["bf16"] / "masks" / f"{image_id}.png") as b:
            assert (np.asarray(a) == np.asarray(b)).mean() > 0.9
