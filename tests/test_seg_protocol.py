"""Stage 3's published test protocol (deeplab-pytorch's multi-scale max fusion and dense CRF),
the published evaluation lists and the VOC test export, checked against independent references:
hand-computed maxima, pydensecrf called directly with the published parameters, mmseg's own
single-scale inference, the shipped id list and the VOC devkit's colour map."""
import json
from unittest import mock
from dataclasses import replace

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from test_seg_train import REPO, TINY, _tool, data  # noqa: F401  (the synthetic data set fixture)
from wsss.evaluation.results import read_results, results_record, scores_from_areas, write_results
from wsss.seg.errors import MissingFileError
from wsss.seg.msc import fuse_max
from wsss.seg.protocol import PROTOCOLS, predict_variants

COCOSTUFF27_VAL = REPO / "data/splits/cocostuff27_val_tagclip.txt"


class HalfResNet(torch.nn.Module):
    """A stand-in segmentor: logits = a fixed 1x1 channel mix of the input, average-pooled 2x2
    (output stride 2), through mmseg's ``extract_feat`` / ``decode_head.forward`` interface."""

    def __init__(self, classes=4, seed=0):
        super().__init__()
        self.mix = torch.randn(classes, 3, generator=torch.Generator().manual_seed(seed))
        self.decode_head = self

    def extract_feat(self, x):
        return [torch.einsum("kc,nchw->nkhw", self.mix, x)]

    def forward(self, feats):
        return F.avg_pool2d(feats[0], 2)


def _image_and_inputs(size=(24, 32), seed=1):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    image[: size[0] // 2, : size[1] // 2] = (200, 30, 30)
    inputs = torch.from_numpy((image.astype(np.float32) - 128) / 60).permute(2, 0, 1)[None]
    return image, inputs


def test_fuse_max_is_the_elementwise_max_of_the_upsampled_scales():
    full = torch.tensor([[[[1., 5.], [0., 2.]], [[3., 0.], [4., 4.]]]])  # 1 x 2 classes x 2 x 2
    half = torch.tensor([[[[2.]], [[3.5]]]])                              # 1 x 1: upsampled, constant
    fused = fuse_max([full, half])
    assert fused.tolist() == [[[[2., 5.], [2., 2.]], [[3.5, 3.5], [4., 4.]]]]


def test_multi_scale_labels_are_the_argmax_of_the_max_over_upsampled_scales():
    net = HalfResNet()
    image, inputs = _image_and_inputs()
    labels = predict_variants(net, inputs, replace(PROTOCOLS["published"], crf=None), (24, 32), image)
    h, w = inputs.shape[-2:]
    by_size = {}
    for scale in (1.0, 0.75, 0.5):  # deeplab-pytorch: bilinear input resize to floor(scale * size)
        x = inputs if scale == 1 else F.interpolate(inputs, size=(int(h * scale), int(w * scale)),
                                                    mode="bilinear", align_corners=False)
        by_size[scale] = F.avg_pool2d(torch.einsum("kc,nchw->nkhw", net.mix, x), 2)
    ref_size = by_size[1.0].shape[-2:]
    up = [F.interpolate(v, size=ref_size, mode="bilinear", align_corners=False).numpy() for v in by_size.values()]
    fused = np.maximum(np.maximum(up[0], up[1]), up[2])
    expected = F.interpolate(torch.from_numpy(fused), size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0)
    single = F.interpolate(by_size[1.0], size=(h, w), mode="bilinear", align_corners=False)[0].argmax(0)
    assert list(labels) == ["single_scale", "multi_scale"]
    assert torch.equal(labels["multi_scale"], expected)
    assert torch.equal(labels["single_scale"], single)
    assert not torch.equal(expected, single)  # the scales matter for this input


def test_crf_post_processing_matches_pydensecrf_with_the_published_parameters():
    net = HalfResNet(classes=3, seed=2)
    image, inputs = _image_and_inputs(size=(40, 48), seed=3)
    labels = predict_variants(net, inputs, PROTOCOLS["published"], (40, 48), image)
    assert list(labels) == ["single_scale", "multi_scale", "multi_scale_crf"]
    # deeplab-pytorch (libs/utils/crf.py, configs/voc12.yaml) on the softmax of the fused logits
    prob = torch.softmax(F.interpolate(fuse_max([net(net.extract_feat(inputs))] + [
        net(net.extract_feat(F.interpolate(inputs, scale_factor=s, mode="bilinear", align_corners=False)))
        for s in (0.75, 0.5)]), size=(40, 48), mode="bilinear", align_corners=False), 1)[0].numpy()
    crf = dcrf.DenseCRF2D(48, 40, 3)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.maximum(prob, 1e-5)).reshape(3, -1).astype(np.float32)))
    crf.addPairwiseGaussian(sxy=1, compat=3)
    # its dataset subtracts the BGR mean (voc12.yaml) and main.py's crf casts that to uint8 (wrapping)
    published = (image[..., ::-1].astype(np.float64) - (104.008, 116.669, 122.675)).astype(np.int64).astype(np.uint8)
    crf.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.ascontiguousarray(published), compat=4)
    expected = np.asarray(crf.inference(10)).reshape(3, 40, 48).argmax(0)
    assert (labels["multi_scale_crf"].numpy() == expected).all()
    assert (expected != labels["multi_scale"].numpy()).mean() > 0.05  # the CRF changes the labels


def test_loop_predictions_carry_every_variant_and_the_crf_result_as_prediction():
    from mmseg.structures import SegDataSample

    from wsss.seg.loops import predict_batch

    net = HalfResNet(classes=3, seed=2)
    image, inputs = _image_and_inputs(size=(40, 48), seed=3)
    sample = SegDataSample(metainfo=dict(img_shape=(40, 48), ori_shape=(40, 48)))
    raw = torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1)  # as loaded: uint8 BGR
    net.data_preprocessor = lambda batch, training: dict(inputs=inputs, data_samples=batch["data_samples"])
    (out,) = predict_batch(net, dict(inputs=[raw], data_samples=[sample]), PROTOCOLS["published"])
    expected = predict_variants(net, inputs, PROTOCOLS["published"], (40, 48), image)
    assert list(out.variant_labels) == list(expected)
    assert all(torch.equal(out.variant_labels[k], v) for k, v in expected.items())
    assert torch.equal(out.pred_sem_seg.data[0], expected["multi_scale_crf"])


def test_crf_needs_the_original_size():
    net = HalfResNet()
    image, inputs = _image_and_inputs()
    with pytest.raises(Exception, match="original size"):
        predict_variants(net, inputs, PROTOCOLS["published"], (30, 40), None)


def test_clip_es_config_validates_and_tests_by_the_published_protocol():
    from mmengine.config import Config

    for name in ("voc12aug-321x321", "voc12test-export"):
        cfg = Config.fromfile(str(REPO / f"configs/deeplabv2/deeplabv2_r101-d8_clip-es-20k_{name}.py"))
        assert cfg.test_cfg == dict(type="ProtocolTestLoop", protocol="published")
        assert not any(t["type"] == "Resize" for t in cfg.test_dataloader.dataset.pipeline)  # original size
    assert cfg.custom_hooks == [dict(type="VOCTestExportHook", competition="comp6")]
    assert cfg.test_dataloader.dataset.ann_file == "ImageSets/Segmentation/test.txt"
    cfg = Config.fromfile(str(REPO / "configs/deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py"))
    assert cfg.val_cfg == dict(type="ProtocolValLoop", protocol="published")
    assert cfg.val_dataloader.dataset.pipeline == cfg.test_dataloader.dataset.pipeline


def test_unknown_protocol_is_one_line(tmp_path):
    from tagclip_cls.runtime.errors import UserError

    (tmp_path / "any.pth").write_bytes(b"")  # refused before the checkpoint is read
    with pytest.raises(UserError, match=r"^unknown test protocol 'fancy'; choose one of single, published$"):
        _tool("test_seg").main([TINY, str(tmp_path / "any.pth"), "--protocol", "fancy"])


# ---- published splits -----------------------------------------------------------------------

def test_shipped_cocostuff27_val_list_has_tagclips_4172_unique_ids():
    ids = COCOSTUFF27_VAL.read_text().split()
    assert len(ids) == 4172 and len(set(ids)) == 4172
    assert all(len(i) == 12 and i.isdigit() for i in ids)
    assert ids[:3] == ["000000000139", "000000000632", "000000000724"]


def test_cocostuff27_evaluation_reads_the_shipped_list(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import wsss.seg.register  # noqa: F401

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(REPO / "configs/_base_/datasets/coco_stuff27.py"))
    for loader in ("val_dataloader", "test_dataloader"):
        ds = dict(cfg[loader]["dataset"], data_root=str(tmp_path), pipeline=[])
        (tmp_path / "images/val2017").mkdir(parents=True, exist_ok=True)
        # the first listed image is the first one looked for
        with pytest.raises(MissingFileError, match="000000000139.jpg: image not found"):
            DATASETS.build(ds)


def test_coco_object_warns_when_val_is_not_the_full_4952(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from tagclip_cls.formats.mask_png import write_label_png

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(REPO / "configs/_base_/datasets/coco_object.py"))
    (tmp_path / "images/val2017").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / f"images/val2017/{i:012d}.jpg")
        write_label_png(tmp_path / f"masks_object/val2017/{i:012d}.png", np.zeros((8, 8), np.uint8), tmp_path)
    with mock.patch("wsss.seg.datasets.print_log") as log:
        ds = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=str(tmp_path), pipeline=[]))
    assert len(ds) == 2
    (message, *_), _ = log.call_args
    assert log.call_count == 1 and "\n" not in message
    assert message.endswith("masks_object/val2017: 2 images, but the full split has 4952: scores are not "
                            "comparable with published ones")


# ---- one results file, every variant ----------------------------------------------------------

def _scores(inter):
    return scores_from_areas([inter, 4], [10, 6], [10, 5], [inter, 5], ["a", "b"])


def test_results_record_with_variants_round_trips_and_is_validated(tmp_path):
    variants = [{"name": n, **_scores(i)} for n, i in (("single_scale", 2), ("multi_scale", 5))]
    rec = results_record(variants[-1], split="val", variants=variants)
    write_results(rec, tmp_path / "r.json")
    assert read_results(tmp_path / "r.json") == rec
    md = (tmp_path / "r.md").read_text()
    # IoU (a, b): (2/10, 4/6) and (5/10, 4/6)
    assert "| this run (val, single_scale) | 43.33 |" in md and "| this run (val, multi_scale) | 58.33 |" in md
    with pytest.raises(ValueError, match="last variant"):
        results_record(variants[0], split="val", variants=variants)
    bad = dict(rec, variants=[dict(variants[0], name="multi_scale"), variants[1]])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(Exception, match="names must differ"):
        read_results(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    """A briefly trained tiny network (10 iterations), so that its predictions have structure,
    validated at the end by the published protocol."""
    work = tmp_path_factory.mktemp("protocol_work")
    _tool("train_seg").main([TINY, "--pseudo-masks", str(data / "pseudo_masks"), "--data-root", str(data),
                             "--work-dir", str(work), "--cfg-options", "train_cfg.max_iters=10",
                             "train_cfg.val_interval=10", "default_hooks.checkpoint.interval=10",
                             "default_hooks.logger.interval=10", "val_cfg.type=ProtocolValLoop",
                             "val_cfg.protocol=published"])
    return work / "iter_10.pth"


def test_test_tool_writes_single_multi_scale_and_crf_miou_in_one_file(data, checkpoint, tmp_path):
    plain, published = tmp_path / "plain", tmp_path / "published"
    _tool("test_seg").main([TINY, str(checkpoint), "--data-root", str(data), "--work-dir", str(plain)])
    _tool("test_seg").main([TINY, str(checkpoint), "--data-root", str(data), "--work-dir", str(published),
                            "--protocol", "published"])
    rec = read_results(published / "results_test.json")
    names = [v["name"] for v in rec["variants"]]
    assert names == ["single_scale", "multi_scale", "multi_scale_crf"]
    assert rec["mIoU"] == rec["variants"][-1]["mIoU"]
    # the single-scale variant is what mmseg's own inference (the config's plain TestLoop) scores
    mmseg_single = json.loads((plain / "results_test.json").read_text())
    assert "variants" not in mmseg_single
    assert rec["variants"][0]["per_class"] == mmseg_single["per_class"]
    miou = [v["mIoU"] for v in rec["variants"]]
    assert len(set(miou)) == 3, miou  # three different predictions were scored
    md = (published / "results_test.md").read_text()
    assert all(f"{name}) | {v:.2f} |" in md for name, v in zip(names, miou))
    # training's validation (same weights, same images) went through the same protocol code
    val = read_results(checkpoint.parent / "results_val.json")
    assert val["iteration"] == 10 and val["variants"] == rec["variants"]


# ---- VOC test export --------------------------------------------------------------------------

def _voc_colour(index):
    """The VOC devkit's colour map (VOClabelcolormap.m), written out bit by bit."""
    r = g = b = 0
    for bit in range(8):
        r |= ((index >> (3 * bit)) & 1) << (7 - bit)
        g |= ((index >> (3 * bit + 1)) & 1) << (7 - bit)
        b |= ((index >> (3 * bit + 2)) & 1) << (7 - bit)
    return r, g, b


def test_voc_test_export_writes_server_layout_palette_pngs(data, checkpoint, tmp_path):
    ids = (data / "ImageSets/Segmentation/val.txt").read_text().split()[:3]
    split = tmp_path / "test.txt"
    split.write_text("\n".join(ids) + "\n")
    config = tmp_path / "tiny_export.py"
    config.write_text(
        f"_base_ = [{TINY!r}]\n"
        f"test_dataloader = dict(dataset=dict(data_prefix=dict(_delete_=True, img_path='JPEGImages'), "
        f"ann_file={str(split)!r}, pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]))\n"
        "test_evaluator = []\ntest_cfg = dict(type='ProtocolTestLoop', protocol='published')\n"
        "custom_hooks = [dict(type='VOCTestExportHook')]\n")
    out = tmp_path / "export"
    _tool("test_seg").main([str(config), str(checkpoint), "--data-root", str(data), "--work-dir", str(out)])
    folder = out / "results/VOC2012/Segmentation/comp6_test_cls"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.png" for i in ids)
    assert not (out / "results_test.json").exists()
    for image_id in ids:
        png = Image.open(folder / f"{image_id}.png")
        assert png.mode == "P" and png.size == Image.open(data / f"JPEGImages/{image_id}.jpg").size
        palette = png.getpalette()
        assert [tuple(palette[3 * i: 3 * i + 3]) for i in (0, 1, 2, 3, 15, 20)] == [
            (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (192, 128, 128), (0, 64, 128)]
        assert all(tuple(palette[3 * i: 3 * i + 3]) == _voc_colour(i) for i in range(256))
        assert set(np.unique(np.asarray(png)).tolist()) <= set(range(21))
