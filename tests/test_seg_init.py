"""Backbone initialisation from ResNet checkpoints in deeplab-pytorch's and torchvision's key
layouts: every weight lands where the layout's own network would use it (the converted backbone
computes what that network computes), or the load is refused in one line and nothing is copied."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope

import wsss.seg.register  # noqa: F401  (the project's mmseg modules)
from tagclip_cls.runtime.errors import UserError
from wsss.seg.pretrained import StrictPretrained

REPO = Path(__file__).resolve().parents[1]
CLIP_ES = REPO / "configs/deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py"
R50, R101 = (3, 4, 6, 3), (3, 4, 23, 3)
STEM = 4  # a narrow network: stem 4 channels, bottleneck widths 4/8/16/32 (outputs x4)


def _bn(state, prefix, ch, gen):
    state[f"{prefix}.weight"] = torch.rand(ch, generator=gen) + 0.5
    state[f"{prefix}.bias"] = torch.randn(ch, generator=gen) * 0.1
    state[f"{prefix}.running_mean"] = torch.randn(ch, generator=gen) * 0.1
    state[f"{prefix}.running_var"] = torch.rand(ch, generator=gen) + 0.5
    state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)


def _conv(state, name, out_ch, in_ch, k, gen):
    state[name] = torch.randn(out_ch, in_ch, k, k, generator=gen) * (2.0 / (in_ch * k * k)) ** 0.5


def deeplab_state(blocks, seed=0, prefix=""):
    """A seeded ResNet state dict named as deeplab-pytorch's libs/models/resnet.py names it
    (layer1 = stem _ConvBnReLU 'conv1'; layer2..5 = _ResLayer of _Bottleneck 'block{n}' with
    reduce / conv3x3 / increase / shortcut, each a _ConvBnReLU of 'conv' and 'bn')."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    _conv(state, f"{prefix}layer1.conv1.conv.weight", STEM, 3, 7, gen)
    _bn(state, f"{prefix}layer1.conv1.bn", STEM, gen)
    in_ch = STEM
    for layer, n in enumerate(blocks, start=2):
        mid = STEM * 2 ** (layer - 2)
        out = mid * 4
        for b in range(1, n + 1):
            p = f"{prefix}layer{layer}.block{b}"
            for unit, (o, i, k) in {"reduce": (mid, in_ch, 1), "conv3x3": (mid, mid, 3),
                                    "increase": (out, mid, 1)}.items():
                _conv(state, f"{p}.{unit}.conv.weight", o, i, k, gen)
                _bn(state, f"{p}.{unit}.bn", o, gen)
            if b == 1:
                _conv(state, f"{p}.shortcut.conv.weight", out, in_ch, 1, gen)
                _bn(state, f"{p}.shortcut.bn", out, gen)
            in_ch = out
    return state


def deeplab_features(state, x, blocks, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)):
    """The dilated ResNet of deeplab-pytorch's DeepLabV2 (libs/models/deeplabv2.py) in eval mode,
    written out: stride in the 1x1 'reduce', ceil-mode stem pool, every block at its layer's dilation."""
    def cbr(h, p, stride=1, pad=0, dilation=1, relu=True):
        h = F.conv2d(h, state[f"{p}.conv.weight"], stride=stride, padding=pad, dilation=dilation)
        h = F.batch_norm(h, state[f"{p}.bn.running_mean"], state[f"{p}.bn.running_var"],
                         state[f"{p}.bn.weight"], state[f"{p}.bn.bias"], False, 0.0, 1e-5)
        return F.relu(h) if relu else h

    h = F.max_pool2d(cbr(x, "layer1.conv1", 2, 3), 3, 2, 1, ceil_mode=True)
    for layer, (n, stride, dilation) in enumerate(zip(blocks, strides, dilations), start=2):
        for b in range(1, n + 1):
            p, s = f"layer{layer}.block{b}", stride if b == 1 else 1
            out = cbr(cbr(cbr(h, f"{p}.reduce", s), f"{p}.conv3x3", 1, dilation, dilation), f"{p}.increase", relu=False)
            h = F.relu(out + (cbr(h, f"{p}.shortcut", s, relu=False) if b == 1 else h))
    return h


def _caffe_resnet(depth):
    """The CLIP-ES config's backbone at ``depth``, narrowed to :data:`STEM` channels, uninitialised."""
    from mmengine.config import Config
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(CLIP_ES)).model.backbone
    cfg.update(depth=depth, stem_channels=STEM, base_channels=STEM, init_cfg=None)
    return MODELS.build(cfg)


@pytest.mark.parametrize("prefix", ["", "base."], ids=["deeplabv1-coco", "deeplabv2-msc"])
def test_deeplab_pytorch_checkpoint_gives_deeplab_pytorch_features(tmp_path, prefix):
    state = deeplab_state(R50, seed=1, prefix=prefix)
    state[f"{prefix}aspp.c0.weight"] = torch.zeros(21, 128, 3, 3)  # head entries are not the backbone's
    path = tmp_path / "init.pth"
    torch.save(state, path)
    backbone = _caffe_resnet(50)
    StrictPretrained(str(path))(backbone)
    x = torch.randn(2, 3, 64, 66)  # 64 -> 32 -> 17 rows only with a ceil-mode pool
    with torch.no_grad():
        backbone.eval()  # (mmseg ResNet.train returns None)
        got = backbone(x)[0]
    reference = deeplab_features({k.removeprefix(prefix): v for k, v in state.items()}, x, R50)
    assert got.shape == reference.shape == (2, 128, 9, 9)
    torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)


def test_full_resnet101_key_list_loads(tmp_path):
    path = tmp_path / "r101.pth"
    torch.save(deeplab_state(R101, seed=2), path)
    backbone = _caffe_resnet(101)
    StrictPretrained(str(path), layout="deeplab-pytorch")(backbone)
    assert torch.equal(backbone.layer3[22].conv3.weight, torch.load(path)["layer4.block23.increase.conv.weight"])


def test_torchvision_checkpoint_gives_torchvision_features(tmp_path):
    import torchvision
    from mmseg.registry import MODELS

    torch.manual_seed(3)
    reference = torchvision.models.resnet50().eval()
    for m in reference.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    init_default_scope("mmseg")
    backbone = MODELS.build(dict(type="ResNet", depth=50, out_indices=(3, ), style="pytorch",
                                 init_cfg=dict(type="StrictPretrained", checkpoint=str(path))))
    backbone.init_weights()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        backbone.eval()  # (mmseg ResNet.train returns None)
        got = backbone(x)[0]
        r = reference
        expected = r.layer4(r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x))))))))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_incomplete_checkpoint_is_refused_in_one_line_and_copies_nothing(tmp_path):
    state = deeplab_state(R50, seed=4)
    del state["layer3.block2.conv3x3.conv.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    backbone = _caffe_resnet(50)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(UserError) as err:
        StrictPretrained(str(path))(backbone)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "deeplab-pytorch" in message
    assert "1 backbone weights" in message and "layer2.1.conv2.weight" in message
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())


def test_smaller_network_and_unknown_layout_are_refused(tmp_path):
    r50 = tmp_path / "r50.pth"
    torch.save(deeplab_state(R50, seed=5), r50)
    with pytest.raises(UserError, match=r"leaves 255 backbone weights unset .*first: layer3\.6\.conv1\.weight"):
        StrictPretrained(str(r50))(_caffe_resnet(101))  # 17 missing blocks x 3 x (conv + 4 BN entries)
    foreign = tmp_path / "vit.pth"
    torch.save({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(UserError, match="not a ResNet checkpoint in a known layout"):
        StrictPretrained(str(foreign))(_caffe_resnet(50))
    with pytest.raises(UserError, match="pretrained checkpoint not found"):
        StrictPretrained(str(tmp_path / "missing.pth"))(_caffe_resnet(50))


def test_training_load_from_sets_the_backbone_or_refuses(tmp_path):
    from mmseg.registry import MODELS
    from wsss.seg.runner import InitCheckpointRunner

    init_default_scope("mmseg")
    model = MODELS.build(dict(type="MSCEncoderDecoder", backbone=dict(
        type="CaffeResNet", depth=50, stem_channels=STEM, base_channels=STEM, out_indices=(3, ),
        strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)), decode_head=dict(
        type="DeepLabV2Head", in_channels=128, num_classes=3, dilations=(1, 2))))
    runner = InitCheckpointRunner.__new__(InitCheckpointRunner)  # only its loading is exercised
    runner.model = model
    state = deeplab_state(R50, seed=6)
    runner.load_weights(state, "init.pth")
    assert torch.equal(model.backbone.conv1.weight, state["layer1.conv1.conv.weight"])
    del state["layer1.conv1.conv.weight"]
    with pytest.raises(UserError, match="first: conv1.weight"):
        runner.load_weights(state, "init.pth")


def test_torchvision_scheme_reads_torch_hub_cache(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import get_torchvision_models

    url = get_torchvision_models()["resnet50"]  # the file mmengine's torchvision://resnet50 fetches
    cached = tmp_path / "checkpoints" / url.rsplit("/", 1)[1]
    cached.parent.mkdir()
    torch.save(deeplab_state(R50, seed=7), cached)  # already downloaded: nothing is fetched
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    backbone = _caffe_resnet(50)
    StrictPretrained("torchvision://resnet50")(backbone)
    assert torch.equal(backbone.conv1.weight, torch.load(cached)["layer1.conv1.conv.weight"])
    with pytest.raises(UserError, match="torchvision has no model named 'resnet7'"):
        StrictPretrained("torchvision://resnet7")(backbone)


def test_load_from_or_resume_skips_the_pretrained_init():
    from mmengine.config import Config
    from wsss.seg.runner import skip_pretrained_init

    cfg = Config.fromfile(str(CLIP_ES))
    assert cfg.model.backbone.init_cfg.type == "StrictPretrained"
    skip_pretrained_init(cfg)
    assert cfg.model.backbone.init_cfg is None
