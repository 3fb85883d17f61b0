"""tools/gen_pseudo_masks.py end to end on tiny synthetic images with the tiny random CLIP."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image

TOOL = str(Path(__file__).resolve().parent.parent / "tools" / "gen_pseudo_masks.py")
VOC_IDS = {"cat": 7, "dog": 11, "person": 14}


def run_tool(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the tool in this process; returns (exit status, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", [TOOL, *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(TOOL, run_name="__main__")
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("text_cache"))


@pytest.fixture()
def setup(tmp_path, tiny_checkpoint, text_cache):
    root = tmp_path / "images"
    root.mkdir()
    write_image(root / "a_grey.png", (70, 90), "L", seed=1)
    write_image(root / "b_rgba.png", (83, 61), "RGBA", seed=2)
    write_image(root / "c_rgb.jpg", (64, 100), "RGB", seed=3)
    tags = tmp_path / "tags.txt"
    tags.write_text("a_grey cat dog\nb_rgba person\nc_rgb\n")
    base = ["--img-root", str(root), "--tags", str(tags), "--dataset", "voc2012", "--pretrained",
            tiny_checkpoint, "--cache-dir", text_cache, "--no-progress", "--log-level", "WARNING"]
    return tmp_path, root, tags, base


SIZES = {"a_grey": (70, 90), "b_rgba": (83, 61), "c_rgb": (64, 100)}
TAGS = {"a_grey": [7, 11], "b_rgba": [14], "c_rgb": []}


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_outputs_resume_overwrite_and_shards(setup, monkeypatch, capsys):
    tmp_path, _, _, base = setup
    out = tmp_path / "out"
    code, err = run_tool([*base, "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "cams").iterdir()) == ["a_grey.npz", "b_rgba.npz", "c_rgb.npz"]
    for image_id, (h, w) in SIZES.items():
        with np.load(out / "cams" / f"{image_id}.npz", allow_pickle=False) as data:
            assert sorted(data.files) == ["cams", "keys"]
            keys, cams = data["keys"], data["cams"]
        assert keys.dtype == np.int64 and keys.tolist() == TAGS[image_id]
        assert cams.dtype == np.float16 and cams.shape == (len(keys), h, w)
        with Image.open(out / "masks" / f"{image_id}.png") as png:
            assert png.mode == "P" and png.size == (w, h)
            labels = np.asarray(png)
        assert set(np.unique(labels)) <= {0, *(k + 1 for k in keys)}
        if len(keys):  # the background rule on the stored CAMs
            rows = np.concatenate([1 - cams.astype(np.float32).max(0, keepdims=True), cams.astype(np.float32)])
            np.testing.assert_array_equal(labels, np.array([0, *(keys + 1)])[rows.argmax(0)])
        else:
            assert (labels == 0).all()
    first = _files(out)

    # second run: everything is skipped, nothing is rewritten
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.np*")}
    code, err = run_tool([*base, "--out", str(out)], monkeypatch, capsys)
    assert code == 0 and "0 images computed, 3 already done, 0 failed" in err
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*.np*")}

    # a leftover temp file is not an output; a lost mask is rebuilt from the CAM file
    (out / "cams" / "a_grey.npz").rename(out / "cams" / ".a_grey.npz.abc123.tmp")
    (out / "masks" / "b_rgba.png").unlink()
    code, err = run_tool([*base, "--out", str(out)], monkeypatch, capsys)
    assert code == 0 and "1 images computed, 2 already done" in err
    (out / "cams" / ".a_grey.npz.abc123.tmp").unlink()
    assert _files(out) == first

    code, err = run_tool([*base, "--out", str(out), "--overwrite"], monkeypatch, capsys)
    assert code == 0 and "3 images computed" in err
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items())
    assert _files(out) == first

    # two torchrun ranks write the same bytes as one process
    sharded = tmp_path / "sharded"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert run_tool([*base, "--out", str(sharded)], monkeypatch, capsys)[0] == 0
    assert _files(sharded) == first


def test_crf_and_ignore_threshold(setup, monkeypatch, capsys):
    tmp_path, _, _, base = setup
    out = tmp_path / "out"
    code, err = run_tool([*base, "--out", str(out), "--crf", "--workers", "0", "--ignore-below", "0.95"],
                         monkeypatch, capsys)
    assert code == 0, err
    for image_id, (h, w) in SIZES.items():
        with Image.open(out / "masks_crf" / f"{image_id}.png") as png:
            assert png.mode == "P" and png.size == (w, h)
            assert set(np.unique(np.asarray(png))) <= {0, 255, *(k + 1 for k in TAGS[image_id])}


def test_bad_image_skipped_or_fatal(setup, monkeypatch, capsys):
    tmp_path, root, tags, base = setup
    (root / "d_bad.jpg").write_bytes(b"not an image")
    good = tags.read_text()
    tags.write_text(good + "d_bad cat\n")
    code, err = run_tool([*base, "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0 and "3 images computed, 0 already done, 1 failed (d_bad)" in err
    assert not (tmp_path / "out" / "cams" / "d_bad.npz").exists()
    tags.write_text("d_bad cat\n" + good)  # fails first: the strict run stops at once
    code, err = run_tool([*base, "--out", str(tmp_path / "strict"), "--strict"], monkeypatch, capsys)
    assert code == 2 and err.strip().startswith("error: ") and "d_bad.jpg" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("problem, message", [
    ("missing", "split file not found"),
    ("unknown", "unknown class label 'unicorn'"),
    ("layers", "--affinity-layers '-8': expected START:END"),
])
def test_user_mistakes_are_one_line_errors(setup, monkeypatch, capsys, problem, message):
    tmp_path, _, tags, base = setup
    extra = []
    if problem == "missing":
        tags.unlink()
    elif problem == "unknown":
        tags.write_text("a_grey cat unicorn\n")
    else:
        extra = ["--affinity-layers=-8"]
    code, err = run_tool([*base, *extra, "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and message in err
    assert err.strip().count("\n") == 0 and err.startswith("error: ")


def test_cocostuff_maps_to_coarse_27(setup, monkeypatch, capsys):
    tmp_path, _, tags, base = setup
    tags.write_text("a_grey person grass\n")
    args = [a if a != "voc2012" else "cocostuff" for a in base]
    # the published COCO-Stuff settings: all of the last 8 layers, boxes at 0.7
    code, err = run_tool([*args, "--affinity-layers=-8:", "--box-threshold", "0.7", "--out", str(tmp_path / "out")],
                         monkeypatch, capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "out" / "config.json").read_text())["cam"]
    assert config["affinity_layers"] == [-8, None] and config["box_threshold"] == 0.7
    labels = np.asarray(Image.open(tmp_path / "out" / "masks" / "a_grey.png"))
    from tagclip_cls.core.presets import load_preset
    preset = load_preset("cocostuff")
    coarse = preset.clip_es["class_to_coarse27"]
    allowed = {coarse[preset.classes.index("person")], coarse[preset.classes.index("grass")]}
    assert set(np.unique(labels)) <= allowed


def test_reader_and_writer_threads_write_the_same_files(setup, monkeypatch, capsys):
    tmp_path, root, _, base = setup
    (root / "d_broken.jpg").write_bytes(b"not an image")
    tags = tmp_path / "tags_broken.txt"
    tags.write_text("a_grey cat dog\nd_broken cat\nb_rgba person\nc_rgb\n")
    base = [*base[:2], "--tags", str(tags), *base[4:]]
    outputs = {}
    for threads in ("0", "2"):
        out = tmp_path / f"out{threads}"
        code, text = run_tool([*base, "--out", str(out), "--loader-threads", threads], monkeypatch, capsys)
        assert code == 0, text
        assert "3 images computed, 0 already done, 1 failed (d_broken)" in text
        outputs[threads] = _files(out)
    assert outputs["0"] == outputs["2"] and "masks/c_rgb.png" in outputs["2"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "wrong shape"])
def test_resume_rebuilds_lost_label_maps_and_recomputes_damaged_cam_files(setup, monkeypatch, capsys, damage):
    tmp_path, _, _, base = setup
    out = tmp_path / "out"
    assert run_tool([*base, "--out", str(out)], monkeypatch, capsys)[0] == 0
    first = _files(out)
    (out / "masks" / "a_grey.png").unlink()  # lost label map, CAMs kept: rebuilt from the CAMs
    cam = out / "cams" / "b_rgba.npz"
    if damage == "wrong shape":  # right keys, maps of another size: readable keys, unreadable maps
        np.savez(cam, keys=np.array([14]), cams=np.zeros((2, 3, 3), np.float16))
    else:
        cam.write_bytes({"truncated": first["cams/b_rgba.npz"][:100], "empty": b"", "garbage": b"\x00" * 999}[damage])
    (out / "masks" / "b_rgba.png").unlink()
    code, text = run_tool([*base, "--out", str(out)], monkeypatch, capsys)
    assert code == 0, text
    assert "1 images computed, 2 already done, 0 failed" in text
    assert _files(out) == first  # byte-identical to the uninterrupted run


def test_resume_recomputes_images_whose_tags_changed(setup, monkeypatch, capsys):
    tmp_path, _, tags, base = setup
    out = tmp_path / "out"
    assert run_tool([*base, "--out", str(out), "--crf"], monkeypatch, capsys)[0] == 0
    tags.write_text("a_grey cat dog\nb_rgba cat\nc_rgb\n")  # b_rgba: person -> cat
    code, text = run_tool([*base, "--out", str(out), "--crf"], monkeypatch, capsys)
    assert code == 0 and "1 images computed, 2 already done" in text, text
    with np.load(out / "cams" / "b_rgba.npz") as data:
        assert data["keys"].tolist() == [VOC_IDS["cat"]]
    assert set(np.unique(np.asarray(Image.open(out / "masks_crf" / "b_rgba.png")))) <= {0, VOC_IDS["cat"] + 1}
