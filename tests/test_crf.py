import numpy as np
import pytest
from PIL import Image

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.presets import load_preset
from tagclip_cls.formats.mask_folder import read_cams
from wsss.crf import bilateral_image
from wsss.masks.crf import (CRFJob, CRFSettings, CRFWork, crf_label_map, crf_label_maps,
                            crf_rows, crf_rows_batch, run_crf_batch)
from wsss.masks.label_maps import LabelSpace
from tagclip_cls.formats.mask_png import read_label_png

VOC = LabelSpace.from_preset(load_preset("voc2012"))
RGB = CRFSettings(image_mode="rgb")


def two_region_image(h=32, w=48, split=24):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, :split] = (20, 120, 220)
    rgb[:, split:] = (200, 60, 40)
    truth = np.zeros((h, w), int)
    truth[:, split:] = 1
    return rgb, truth


def test_published_image_wraps_like_truncation_mod_256():
    rgb = np.array([[[20, 120, 220], [0, 0, 0], [255, 255, 255], [123, 117, 104]]], np.uint8)
    # BGR minus (104.008, 116.669, 122.675), truncated toward zero, modulo 256
    assert bilateral_image(rgb, "published").tolist() == [[[115, 3, 154], [152, 140, 134],
                                                      [150, 138, 132], [0, 0, 0]]]
    assert bilateral_image(rgb, "rgb").tolist() == rgb.tolist()
    with pytest.raises(ValueError):
        bilateral_image(rgb, "bgr")


def test_crf_cleans_noisy_unaries_in_both_modes():
    rgb, truth = two_region_image()
    rng = np.random.default_rng(0)
    p1 = np.clip(np.where(truth == 1, 0.7, 0.3) + rng.uniform(-0.35, 0.35, truth.shape), 0, 1)
    prob = np.stack([1 - p1, p1]).astype(np.float32)
    assert (prob.argmax(0) != truth).mean() > 0.1
    for mode in ("published", "rgb"):
        assert (crf_rows(rgb, prob, CRFSettings(image_mode=mode)) == truth).all()
    rgb.flags.writeable = False  # as np.asarray of a PIL image: pydensecrf needs a writable copy
    assert (crf_rows(rgb, prob, RGB) == truth).all()


def test_image_modes_differ_where_the_wrap_hides_an_edge():
    # blue 0 vs 255: a strong edge in RGB, but 152 vs 150 after the published wrap
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 123, 117
    rgb[:, 36:, 2] = 255
    truth = np.zeros((32, 48), int)
    truth[:, 36:] = 1
    p1 = np.where(truth == 1, 0.55, 0.1).astype(np.float32)
    prob = np.stack([1 - p1, p1])
    assert (crf_rows(rgb, prob, RGB) == truth).all()
    assert (crf_rows(rgb, prob, CRFSettings(image_mode="published")) == 0).all()  # the weak region is smoothed away


def test_threshold_marks_unsure_pixels_255():
    rgb = np.full((16, 16, 3), 90, np.uint8)
    unsure = np.full((2, 16, 16), 0.5, np.float32)
    assert (crf_rows(rgb, unsure, CRFSettings(image_mode="rgb", ignore_below=0.95)) == 255).all()
    sure = np.stack([np.full((16, 16), 0.99), np.full((16, 16), 0.01)]).astype(np.float32)
    assert (crf_rows(rgb, sure, CRFSettings(image_mode="rgb", ignore_below=0.95)) == 0).all()
    assert (crf_rows(rgb, unsure, RGB) != 255).all()


def test_crf_label_map_uses_class_plus_one():
    rgb, truth = two_region_image()
    cams = np.where(truth == 1, 0.9, 0.05)[None].astype(np.float32)
    assert (crf_label_map(rgb, cams, [14], VOC, RGB) == np.where(truth == 1, 15, 0)).all()


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_several_images_in_one_call_as_each_alone(backend):
    """Noisy two-region images of different sizes, a stack of one row and one of none among them:
    the batched call gives each image's rows and label map as its own call (pydensecrf: the
    same bits; torch: one lattice, equal here)."""
    rng = np.random.default_rng(3)
    rgbs, probs = [], []
    for h, w, split in [(32, 48, 24), (20, 30, 9), (25, 17, 10)]:
        rgb, truth = two_region_image(h, w, split)
        p1 = np.clip(np.where(truth == 1, 0.7, 0.3) + rng.uniform(-0.35, 0.35, truth.shape), 0, 1)
        rgbs.append(rgb)
        probs.append(np.stack([1 - p1, p1]).astype(np.float32))
    rgbs += [np.zeros((6, 7, 3), np.uint8)] * 2
    probs += [np.full((1, 6, 7), 0.8, np.float32), np.zeros((0, 6, 7), np.float32)]
    settings = CRFSettings(image_mode="rgb", ignore_below=0.6, backend=backend)
    together = crf_rows_batch(rgbs, probs, settings)
    for rgb, prob, rows in zip(rgbs, probs, together):
        assert np.array_equal(rows, crf_rows(rgb, prob, settings))
    assert (together[3] == 0).all() and (together[4] == 255).all()
    cams = [prob[1:] for prob in probs[:3]]
    maps = crf_label_maps(rgbs[:3], cams, [[14]] * 3, VOC, settings)
    for rgb, c, labels in zip(rgbs, cams, maps):
        assert np.array_equal(labels, crf_label_map(rgb, c, [14], VOC, settings))


def _make_jobs(tmp_path, n):
    rgb, truth = two_region_image()
    jobs = []
    for i in range(n):
        Image.fromarray(rgb).save(tmp_path / f"{i}.png")
        cams = np.where(truth == 1, 0.9, 0.05)[None].astype(np.float32)
        np.savez(tmp_path / f"{i}.npz", keys=np.array([i]), cams=cams)
        jobs.append(CRFJob(str(tmp_path / f"{i}.png"), str(tmp_path / f"{i}.npz"),
                           str(tmp_path / "out" / f"{i}.png")))
    return jobs, truth


def test_batch_inline_and_pool_agree_and_resume(tmp_path):
    jobs, truth = _make_jobs(tmp_path, 3)
    settings = CRFWork(VOC, CRFSettings(image_mode="published"))
    assert run_crf_batch(jobs, settings, workers=0, progress=False).written == 3
    first = [read_label_png(j.out_path) for j in jobs]
    for i, labels in enumerate(first):
        assert (labels == np.where(truth == 1, i + 1, 0)).all()
    again = run_crf_batch(jobs, settings, workers=2, progress=False)
    assert (again.written, again.skipped) == (0, 3)
    assert run_crf_batch(jobs, settings, workers=2, overwrite=True, progress=False).written == 3
    assert all((read_label_png(j.out_path) == f).all() for j, f in zip(jobs, first))


def test_batch_errors_name_the_file(tmp_path):
    jobs, _ = _make_jobs(tmp_path, 1)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(jobs[0].image_path)
    with pytest.raises(UserError, match="0.npz.*differs from image"):
        run_crf_batch(jobs, CRFWork(VOC), progress=False)
    with pytest.raises(UserError, match="missing.npz"):
        read_cams(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", cams=np.zeros((1, 2, 2)))
    with pytest.raises(UserError, match="bad.npz"):
        read_cams(tmp_path / "bad.npz")


@pytest.mark.parametrize("field, value, message", [("image_mode", "bgr", "--crf-image 'bgr': choose one of"),
                                                   ("backend", "cuda", "--crf-backend 'cuda': choose one of"),
                                                   ("ignore_below", 0.0, "--ignore-below must lie in"),
                                                   ("ignore_below", 1.5, "--ignore-below must lie in")])
def test_settings_refuse_a_bad_value_at_once(field, value, message):
    """A bad CRF setting is a one-line user error where the settings are made, before any CRF runs."""
    with pytest.raises(UserError, match=message):
        CRFSettings(**{field: value})
    CRFSettings(ignore_below=1.0)  # the bounds: (0, 1]
