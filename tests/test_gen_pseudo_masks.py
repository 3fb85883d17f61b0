"""tools/gen_pseudo_masks.py end to end on tiny synthetic images with the tiny random CLIP."""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent
TOOL = str(ROOT / "tools" / "gen_pseudo_masks.py")
VOC_IDS = {"cat": 7, "dog": 11, "person": 14}
PERSON, GRASS = 0, 112  # COCO-Stuff-171 class indices; coarse ids 9 and 22 (shared/data/classes.json)


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



def test_torchrun_two_ranks_byte_identical(setup):
    """A real 2-process torchrun writes exactly the files of one process (CRF included)."""
    tmp_path, _, _, base = setup
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, TOOL, *base, "--crf", "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29534", TOOL, *base, "--crf",
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    assert _files(tmp_path / "one") == _files(tmp_path / "two") and len(_files(tmp_path / "one")) == 10


def published_crf_labels(rgb: np.ndarray, keys: list[int], cams: np.ndarray, threshold: float | None,
                         coarse: dict[int, int] | None = None, plain_rgb: bool = False) -> np.ndarray:
    """The published CLIP-ES CRF written out with pydensecrf itself: [1 - max, cams] as the
    softmax stack, the BGR-minus-mean image cast to uint8 (wrapping; ``plain_rgb``: the RGB
    image itself), 10 iterations of Gaussian (sxy 1, compat 3) and bilateral (sxy 67, srgb 3,
    compat 4) kernels; labels 0 / class + 1, and 255 where the confidence is below ``threshold``."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    cams = cams.astype(np.float32)
    if coarse is not None:  # COCO-Stuff: no background row, class -> coarse id
        prob = cams
    else:
        prob = np.concatenate([1 - cams.max(axis=0, keepdims=True), cams]) if len(keys) else np.ones((1, *rgb.shape[:2]), np.float32)
    image = (rgb[..., ::-1].astype(np.float64) - (104.008, 116.669, 122.675)).astype(np.int64).astype(np.uint8)
    if plain_rgb:
        image = rgb.copy()  # pydensecrf takes writable arrays only
    h, w = rgb.shape[:2]
    if len(prob) == 1:
        q = np.ones((1, h, w), np.float32)
    else:
        crf = dcrf.DenseCRF2D(w, h, len(prob))
        crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(prob)))
        crf.addPairwiseGaussian(sxy=1, compat=3)
        crf.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(image), compat=4)
        q = np.array(crf.inference(10)).reshape(len(prob), h, w)
    lookup = np.array([coarse[k] for k in keys] if coarse is not None else [0, *(k + 1 for k in keys)], np.uint8)
    labels = lookup[q.argmax(axis=0)]
    if threshold is not None:
        labels[q.max(axis=0) < threshold] = 255
    return labels


def test_crf_and_ignore_threshold(setup, monkeypatch, capsys):
    tmp_path, root, _, base = setup
    out = tmp_path / "out"
    code, err = run_tool([*base, "--out", str(out), "--crf", "--crf-workers", "0", "--ignore-below", "0.95"],
                         monkeypatch, capsys)
    assert code == 0, err
    for image_id, (h, w) in SIZES.items():
        with np.load(out / "cams" / f"{image_id}.npz") as data:
            keys, cams = data["keys"].tolist(), data["cams"]
        rgb = np.asarray(Image.open(next(root.glob(f"{image_id}.*"))).convert("RGB"))
        with Image.open(out / "masks_crf" / f"{image_id}.png") as png:
            assert png.mode == "P" and png.size == (w, h)
            assert np.array_equal(np.asarray(png), published_crf_labels(rgb, keys, cams, 0.95))


@pytest.mark.parametrize("crf_image", ["published", "rgb"])
def test_torch_crf_backend_agrees_with_pydensecrf(setup, monkeypatch, capsys, crf_image):
    """--crf-backend torch runs the CRF straight after each image's CAMs; its masks against the
    published pydensecrf computation on the stored CAMs (the reference of the test above)."""
    tmp_path, root, _, base = setup
    out = tmp_path / "out"
    code, err = run_tool([*base, "--out", str(out), "--crf", "--crf-backend", "torch", "--crf-image", crf_image,
                          "--ignore-below", "0.95"], monkeypatch, capsys)
    assert code == 0 and "3 CRF masks written" in err, err
    for image_id in SIZES:
        with np.load(out / "cams" / f"{image_id}.npz") as data:
            keys, cams = data["keys"].tolist(), data["cams"]
        rgb = np.asarray(Image.open(next(root.glob(f"{image_id}.*"))).convert("RGB"))
        reference = published_crf_labels(rgb, keys, cams, 0.95, plain_rgb=crf_image == "rgb")
        with Image.open(out / "masks_crf" / f"{image_id}.png") as png:
            assert (np.asarray(png) == reference).mean() >= 0.995


def test_fused_attention_is_recorded_and_used_outside_the_affinity_layers(setup, monkeypatch, capsys):
    """--attention fused: scaled_dot_product_attention in the trunk layers whose attention the
    affinity does not read (VOC: layers 0-3 of 12), the choice kept in config.json, label maps
    nearly those of the exact default."""
    tmp_path, _, _, base = setup
    import torch.nn.functional as F
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    code, err = run_tool([*base, "--out", str(tmp_path / "fused"), "--attention", "fused"], monkeypatch, capsys)
    assert code == 0, err
    assert len(calls) == 4 * 2  # two images have tags
    assert json.loads((tmp_path / "fused" / "config.json").read_text())["cam"]["attention"] == "fused"
    code, err = run_tool([*base, "--out", str(tmp_path / "exact")], monkeypatch, capsys)
    assert code == 0 and len(calls) == 8, err  # the CPU default is exact
    assert json.loads((tmp_path / "exact" / "config.json").read_text())["cam"]["attention"] == "exact"
    for image_id in ("a_grey", "b_rgba"):
        fused, exact = (np.asarray(Image.open(tmp_path / name / "masks" / f"{image_id}.png")) for name in ("fused", "exact"))
        assert (fused == exact).mean() >= 0.99


@pytest.mark.parametrize("batch", [[], ["--batch-size", "3", "--batching", "mixed"]], ids=["alone", "batch3"])
def test_bad_image_skipped_or_fatal(setup, monkeypatch, capsys, batch):
    tmp_path, root, tags, base = setup
    base = [*base, *batch]
    (root / "d_bad.jpg").write_bytes(b"not an image")  # its header already fails
    whole = (root / "c_rgb.jpg").read_bytes()
    (root / "e_cut.jpg").write_bytes(whole[:len(whole) // 2])  # its header reads, its pixels don't
    good = tags.read_text()
    tags.write_text(good + "d_bad cat\ne_cut dog\n")
    code, err = run_tool([*base, "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0 and "3 images computed, 0 already done, 2 failed (d_bad, e_cut)" in err, err
    assert not (tmp_path / "out" / "cams" / "d_bad.npz").exists()
    assert not (tmp_path / "out" / "cams" / "e_cut.npz").exists()
    tags.write_text("d_bad cat\n" + good)  # fails first: the strict run stops at once
    code, err = run_tool([*base, "--out", str(tmp_path / "strict"), "--strict"], monkeypatch, capsys)
    assert code == 2 and err.strip().startswith("error: ") and "d_bad.jpg" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("problem, message", [
    ("missing", "tags file not found"),
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
    code, err = run_tool([*args, "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0, err
    # the preset's defaults are the published COCO-Stuff settings: all of the last 8 layers, boxes at 0.7
    config = json.loads((tmp_path / "out" / "config.json").read_text())["cam"]
    assert config["affinity_layers"] == [-8, None] and config["box_threshold"] == 0.7
    labels = np.asarray(Image.open(tmp_path / "out" / "masks" / "a_grey.png"))
    with np.load(tmp_path / "out" / "cams" / "a_grey.npz") as data:
        keys, cams = data["keys"].tolist(), data["cams"].astype(np.float32)
    # no background row: arg-max over the tags, then COCO-Stuff's coarse ids (person -> 9, grass -> 22)
    assert keys == [PERSON, GRASS]
    coarse = {PERSON: 9, GRASS: 22}
    assert np.array_equal(labels, np.array([coarse[k] for k in keys], np.uint8)[cams.argmax(axis=0)])
    # and the CRF on the same rows, without a background row
    code, err = run_tool([*args, "--out", str(tmp_path / "out"), "--crf", "--crf-workers", "0"], monkeypatch, capsys)
    assert code == 0, err
    rgb = np.asarray(Image.open(next((tmp_path / "images").glob("a_grey.*"))).convert("RGB"))
    crf = np.asarray(Image.open(tmp_path / "out" / "masks_crf" / "a_grey.png"))
    assert np.array_equal(crf, published_crf_labels(rgb, keys, cams, None, coarse))


def test_reader_and_writer_threads_write_the_same_files(setup, monkeypatch, capsys):
    tmp_path, root, _, base = setup
    (root / "d_broken.jpg").write_bytes(b"not an image")
    tags = tmp_path / "tags_broken.txt"
    tags.write_text("a_grey cat dog\nd_broken cat\nb_rgba person\nc_rgb\n")
    base = [*base[:2], "--tags", str(tags), *base[4:]]
    outputs = {}
    for threads in ("0", "2", "4"):  # 4: two writer threads
        out = tmp_path / f"out{threads}"
        code, text = run_tool([*base, "--out", str(out), "--loader-threads", threads], monkeypatch, capsys)
        assert code == 0, text
        assert "3 images computed, 0 already done, 1 failed (d_broken)" in text
        outputs[threads] = _files(out)
    assert outputs["0"] == outputs["2"] == outputs["4"] and "masks/c_rgb.png" in outputs["2"]


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


def test_out_of_memory_fails_that_image_only(setup, monkeypatch, capsys):
    import torch

    from wsss.masks.api import MaskGenerator

    tmp_path, _, _, base = setup
    real = MaskGenerator.cams_batch

    def cams_batch(self, images, tags):
        if any(image.orig_size == SIZES["b_rgba"] for image in images):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 17.7 GiB")
        return real(self, images, tags)

    monkeypatch.setattr(MaskGenerator, "cams_batch", cams_batch)
    code, err = run_tool([*base, "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 0 and "2 images computed, 0 already done, 1 failed (b_rgba)" in err, err
    assert "out of memory" in err and "--overwrite" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a_grey.png", "c_rgb.png"]


@pytest.fixture()
def five_images(setup):
    """The three images and two more of the first two sizes: grid batches of two exist."""
    tmp_path, root, tags, base = setup
    write_image(root / "d_rgb.png", SIZES["a_grey"], seed=4)
    write_image(root / "e_rgb.png", SIZES["b_rgba"], seed=5)
    tags.write_text(tags.read_text() + "d_rgb dog person\ne_rgb cat\n")
    return tmp_path, base


def _cams(out: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for path in sorted((out / "cams").glob("*.npz")):
        with np.load(path) as data:
            arrays[path.stem] = data["cams"].astype(np.float32)
    return arrays


@pytest.mark.parametrize("batching", ["grid", "mixed"])
def test_batches_equal_one_by_one_and_resume_with_the_same_bits(five_images, monkeypatch, capsys, batching):
    """Batches of 2 (mixed: padded, masked): CAMs and label maps close to one by one, the batch
    plan recorded, and a resumed run recomputes a half-done batch whole, so its files are
    byte-identical to those of the uninterrupted run.

    Batched products round differently in the last bits; the tiny random CLIP's refined maps are
    nearly flat, and their min-max scaling turns that into up to 5e-3 (a 1e-3 median shift on
    one image here, 0.2% of its label pixels)."""
    tmp_path, base = five_images
    single, batched = tmp_path / "single", tmp_path / "batched"
    assert run_tool([*base, "--out", str(single)], monkeypatch, capsys)[0] == 0
    code, text = run_tool([*base, "--out", str(batched), "--batch-size", "2", "--batching", batching],
                          monkeypatch, capsys)
    assert code == 0 and "5 images computed" in text, text
    expected, got = _cams(single), _cams(batched)
    assert sorted(got) == sorted(expected) == ["a_grey", "b_rgba", "c_rgb", "d_rgb", "e_rgb"]
    for image_id in expected:
        np.testing.assert_allclose(got[image_id], expected[image_id], atol=1e-2, rtol=0, err_msg=image_id)
        labels = [np.asarray(Image.open(out / "masks" / f"{image_id}.png")) for out in (single, batched)]
        assert (labels[0] == labels[1]).mean() >= 0.99, image_id
    assert json.loads((batched / "config.json").read_text())["batches"] == {"size": 2, "batching": batching}
    assert "batches" not in json.loads((single / "config.json").read_text())
    first = _files(batched)
    for image_id in ("a_grey", "e_rgb"):  # one image of a batch of two (grid: a with d, b with e)
        (batched / "cams" / f"{image_id}.npz").unlink()
    code, text = run_tool([*base, "--out", str(batched), "--batch-size", "2", "--batching", batching],
                          monkeypatch, capsys)
    assert code == 0 and "2 images computed, 3 already done" in text, text
    assert _files(batched) == first
    code, text = run_tool([*base, "--out", str(batched), "--batch-size", "3"], monkeypatch, capsys)
    assert code == 2 and "another 'batches' setting" in text, text


def test_torchrun_two_ranks_in_batches_byte_identical(five_images):
    """Two ranks share out the batches planned from the whole list: each image keeps the company,
    and so the bits, it has in one process (CRF included, torch backend inline)."""
    tmp_path, base = five_images
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [*base, "--crf", "--crf-backend", "torch", "--batch-size", "2", "--batching", "mixed"]
    one = subprocess.run([sys.executable, TOOL, *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29535", TOOL, *args,
                          "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    assert _files(tmp_path / "one") == _files(tmp_path / "two") and len(_files(tmp_path / "one")) == 16


def test_a_rank_whose_share_is_one_missing_image_still_succeeds(setup, monkeypatch, capsys):
    """The batches go to ranks by position, missing images by their line: with one batch of 3 and
    a missing image on line 2, rank 1's share is that image alone, which is no reason to fail."""
    tmp_path, _, tags, base = setup
    tags.write_text("a_grey cat\nzz_missing cat\nb_rgba person\nc_rgb\n")
    args = [*base, "--out", str(tmp_path / "out"), "--batch-size", "4", "--batching", "mixed"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, text = run_tool(args, monkeypatch, capsys)
    assert code == 0 and "rank 1/2: 0 images computed, 0 already done, 1 failed (zz_missing)" in text, text
    monkeypatch.setenv("RANK", "0")
    code, text = run_tool(args, monkeypatch, capsys)
    assert code == 0 and "rank 0/2: 3 images computed, 0 already done, 0 failed" in text, text


@pytest.mark.parametrize("world", ["1", "2"])
def test_no_image_found_is_one_error_on_every_rank(setup, monkeypatch, capsys, world):
    tmp_path, _, tags, base = setup
    tags.write_text("zz_one cat\nzz_two dog\n")
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("RANK", str(int(world) - 1))
    code, text = run_tool([*base, "--out", str(tmp_path / "out")], monkeypatch, capsys)
    assert code == 2 and "error: none of the 2 images could be found or read (first: " in text, text
    assert text.strip().count("\n") == 0


def test_inline_crf_runs_once_per_batch(five_images, monkeypatch, capsys):
    """With the torch backend the CRF of a batch's images is one call (one lattice); its masks
    agree with the CRF of each image alone, from the same stored CAMs."""
    import wsss.masks.run as run_module
    from tagclip_cls.core.presets import make_preset
    from wsss.masks.crf import CRFSettings, crf_label_map
    from wsss.masks.label_maps import LabelSpace

    tmp_path, base = five_images
    calls = []
    real = run_module.crf_label_maps
    monkeypatch.setattr(run_module, "crf_label_maps", lambda rgbs, *args: calls.append(len(rgbs)) or real(rgbs, *args))
    out = tmp_path / "out"
    code, text = run_tool([*base, "--out", str(out), "--crf", "--crf-backend", "torch", "--batch-size", "2",
                           "--batching", "grid"], monkeypatch, capsys)
    assert code == 0 and "5 images computed" in text and "5 CRF masks written" in text, text
    assert sorted(calls) == [1, 2, 2]  # grid batches: a_grey with d_rgb, b_rgba with e_rgb, c_rgb alone
    space = LabelSpace.from_preset(make_preset("voc2012"))
    for path in sorted((out / "cams").glob("*.npz")):
        with np.load(path) as data:
            keys, cams = data["keys"].tolist(), data["cams"]
        rgb = np.asarray(Image.open(next((tmp_path / "images").glob(f"{path.stem}.*"))).convert("RGB"))
        alone = crf_label_map(rgb, cams, keys, space, CRFSettings(backend="torch"))
        written = np.asarray(Image.open(out / "masks_crf" / f"{path.stem}.png"))
        assert (alone == written).mean() >= 0.995, path.stem
