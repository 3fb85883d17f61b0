"""CLIP-ES's DeepLab-v2 recipe as deeplab-pytorch publishes it (configs/voc12.yaml, main.py,
libs/models/msc.py, libs/datasets/base.py), checked against values and rules written here:
the optimizer's lr groups, the multi-scale forward and its losses, the training scales."""
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import wsss.seg.register  # noqa: F401  (the project's mmseg modules)

REPO = Path(__file__).resolve().parents[1]
CLIP_ES = REPO / "configs/deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py"
# configs/voc12.yaml
LR, WEIGHT_DECAY, MOMENTUM = 2.5e-4, 5e-4, 0.9
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)
IGNORE = 255


@pytest.fixture(scope="module")
def clip_es():
    init_default_scope("mmseg")
    return Config.fromfile(str(CLIP_ES))


def test_optimizer_groups_follow_main_py(clip_es):
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    model = MODELS.build(clip_es.model)
    names = {id(p): n for n, p in model.named_parameters()}
    optimizer = build_optim_wrapper(model, clip_es.optim_wrapper).optimizer
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == MOMENTUM
    trained = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.requires_grad:
                trained[names[id(p)]] = (group["lr"], group["weight_decay"])
    # BatchNorm frozen (main.py freeze_bn; in none of its groups): no gradient reaches it
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert set(trained) == set(names.values()) - frozen
    assert frozen and all(n.split(".")[-2].startswith("bn") or "downsample.1" in n for n in frozen)
    # main.py get_params: "1x" backbone convolutions; "10x" ASPP weights; "20x" ASPP biases, no decay
    for name, (lr, wd) in trained.items():
        if name.startswith("backbone."):
            assert "conv" in name or "downsample.0" in name, name
            expected = (LR, WEIGHT_DECAY)
        elif name.startswith("decode_head.aspp.") and name.endswith(".weight"):
            expected = (10 * LR, WEIGHT_DECAY)
        elif name.startswith("decode_head.aspp.") and name.endswith(".bias"):
            expected = (20 * LR, 0.0)
        else:
            raise AssertionError(f"unexpected trained parameter {name}")
        assert (lr, wd) == pytest.approx(expected, rel=1e-9, abs=0), name
    assert sum(n.startswith("decode_head.aspp.") and n.endswith(".bias") for n in trained) == 4


def test_lr_follows_deeplab_pytorchs_stepped_poly_schedule(clip_es):
    """main.py calls PolynomialLR(step_size=10, iter_max=20000, power=0.9).step(epoch=iteration)
    after each iteration: the lr of iteration k (1-based) is lr0 * (1 - 10 floor((k-1)/10) / 20000)
    ** 0.9 for every group, here the 1x and 20x ones, hand-computed."""
    from mmengine.registry import PARAM_SCHEDULERS

    (scheduler_cfg,) = clip_es.param_scheduler
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD([{"params": [model.weight], "lr": LR}, {"params": [model.bias], "lr": 20 * LR}])
    scheduler = PARAM_SCHEDULERS.build({**scheduler_cfg, "optimizer": optimizer})
    used = []
    for _ in range(25):  # iterations 1..25
        used.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for k, lrs in enumerate(used, start=1):
        factor = (1 - 10 * ((k - 1) // 10) / 20000) ** 0.9
        assert lrs == pytest.approx([LR * factor, 20 * LR * factor], rel=1e-12), k
    assert used[9] == used[0] != used[10] == used[19] != used[20]  # changes after iterations 10 and 20 only


def test_clip_es_config_is_the_published_model(clip_es):
    model = clip_es.model
    assert model.type == "MSCEncoderDecoder" and tuple(model.scales) == (1.0, 0.75, 0.5)
    assert model.backbone.type == "CaffeResNet" and model.backbone.depth == 101
    assert model.backbone.init_cfg.type == "StrictPretrained"
    # configs/voc12.yaml IMAGE.MEAN subtracted from BGR input, nothing divided (libs/datasets/base.py)
    pre = model.data_preprocessor
    assert (pre.mean, pre.std, pre.bgr_to_rgb) == ([104.008, 116.669, 122.675], [1.0, 1.0, 1.0], False)
    assert tuple(model.decode_head.dilations) == (6, 12, 18, 24)
    assert clip_es.optim_wrapper.optimizer.lr == LR and clip_es.train_cfg.max_iters == 20000
    assert [t["type"] for t in clip_es.train_pipeline if "Resize" in t["type"] or "Scale" in t["type"]] == [
        "RandomScaleChoice"]


def test_training_scales_are_the_five_published(clip_es):
    from mmseg.registry import TRANSFORMS

    step = next(t for t in clip_es.train_pipeline if t["type"] == "RandomScaleChoice")
    transform = TRANSFORMS.build(step)
    h, w = 61, 101  # not multiples of 4: int() truncates 45.75, 75.75, 126.25
    rng = np.random.default_rng(0)
    label = rng.integers(0, 21, (h, w)).astype(np.uint8)
    random.seed(0)
    sizes = set()
    for _ in range(200):
        out = transform({"img": rng.integers(0, 255, (h, w, 3)).astype(np.uint8), "gt_seg_map": label.copy()})
        oh, ow = out["img"].shape[:2]
        assert out["gt_seg_map"].shape == (oh, ow)
        # libs/datasets/base.py resizes labels with PIL NEAREST
        np.testing.assert_array_equal(out["gt_seg_map"], np.asarray(Image.fromarray(label).resize(
            (ow, oh), resample=Image.NEAREST)))
        sizes.add((oh, ow))
    # libs/datasets/base.py: h, w = int(h * s), int(w * s) for s drawn from DATASET.SCALES
    assert sizes == {(int(h * s), int(w * s)) for s in SCALES}


def _tiny_msc():
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(REPO / "configs/tiny/deeplabv2-msc_r50-caffe-tiny_voc-64x64.py"))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def _logits(model, x, scale):
    if scale != 1.0:
        size = (int(x.shape[2] * scale), int(x.shape[3] * scale))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return model.decode_head(model.backbone(x))


def test_msc_forward_is_the_max_over_upsampled_scales():
    model = _tiny_msc()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        full, *smaller = (_logits(model, x, s) for s in (1.0, 0.75, 0.5))
        fused = full
        for logit in smaller:  # libs/models/msc.py: upsample to the full-scale logits, then max
            fused = torch.maximum(fused, F.interpolate(logit, size=full.shape[2:], mode="bilinear",
                                                       align_corners=False))
        assert smaller[0].shape[2:] != full.shape[2:]
        metas = [dict(img_shape=(56, 56), pad_shape=(56, 56))] * 2
        got = model.encode_decode(x, metas)
    expected = F.interpolate(fused, size=(56, 56), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, F.interpolate(full, size=(56, 56), mode="bilinear", align_corners=False))


def _pil_nearest(labels, size_hw):
    """main.py resize_labels: each label map resized by PIL NEAREST."""
    return torch.stack([torch.from_numpy(np.asarray(
        Image.fromarray(lab.numpy().astype(np.float32)).resize(size_hw[::-1], resample=Image.NEAREST))).long()
        for lab in labels])


def test_msc_loss_is_the_sum_over_scales_and_the_fused_logits():
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData

    model = _tiny_msc()
    x = torch.randn(2, 3, 64, 64)
    gen = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (2, 64, 64), generator=gen)
    labels[:, :10] = IGNORE
    samples = []
    for lab in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=lab[None])
        samples.append(sample)
    with torch.no_grad():
        losses = model.loss(x, samples)
        outputs = [_logits(model, x, s) for s in (1.0, 0.75, 0.5)]
        fused = outputs[0]
        for logit in outputs[1:]:
            fused = torch.maximum(fused, F.interpolate(logit, size=fused.shape[2:], mode="bilinear",
                                                       align_corners=False))
        outputs.append(fused)
        criterion = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)  # main.py
        expected = sum(criterion(logit, _pil_nearest(labels, logit.shape[2:])) for logit in outputs)
    assert len(losses) == 4 and all("loss" in k for k in losses)
    assert {tuple(o.shape[2:]) for o in outputs} == {(9, 9), (7, 7), (5, 5)}
    torch.testing.assert_close(sum(losses.values()), expected, rtol=1e-5, atol=1e-6)
