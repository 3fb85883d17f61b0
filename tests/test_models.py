"""Loading CLIP weights from every supported source, and the errors for bad ones."""
import json

import numpy as np
import open_clip
import pytest
import torch
from safetensors.torch import save_file

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.models import load_clip
from tagclip_cls.tagging.tagclip import TagCLIP

from conftest import TINY


def _scores(clip, images):
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(6, TINY["embed_dim"]), dim=-1)
    return np.stack([r.scores for r in TagCLIP(clip, text, 4).score(images)])


@pytest.fixture(scope="module")
def probe_images():
    return torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(5))


def test_openai_state_dict_round_trip_gives_identical_scores(tiny_clip, tiny_checkpoint, tmp_path, probe_images):
    reloaded = load_clip(None, tiny_checkpoint)
    assert reloaded.num_layers == 12 and reloaded.patch_size == 16
    assert reloaded.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    # save what was loaded in OpenAI layout again, reload: bit-identical scores
    path = tmp_path / "again.pt"
    torch.save(reloaded.model.state_dict(), path)
    again = load_clip(None, str(path))
    assert np.array_equal(_scores(reloaded, probe_images), _scores(again, probe_images))


def test_architecture_is_read_from_checkpoint(tmp_path):
    from tagclip_cls.core.random_weights import save_random_openai_checkpoint
    path = tmp_path / "deep.pt"
    save_random_openai_checkpoint(str(path), vision_width=64, vision_layers=6, patch_size=14, image_size=112,
                                  text_width=64, text_layers=1, embed_dim=32)
    clip = load_clip(None, str(path))
    assert (clip.num_layers, clip.patch_size, clip.visual.grid_size) == (6, 14, (8, 8))
    assert clip.random_weights and "RANDOM" in clip.name  # saved checkpoints are marked
    assert clip.fp16_rounded().random_weights


def test_plain_checkpoint_is_not_marked_random(tiny_clip, tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    assert not load_clip(None, str(path)).random_weights


def test_torchscript_archive_loads_like_state_dict(tiny_clip, tmp_path, probe_images):
    traced = torch.jit.trace(tiny_clip.model.visual, torch.randn(1, 3, 224, 224), check_trace=False)
    # an OpenAI JIT archive holds the whole model; wrap the traced tower with the rest as a module
    holder = torch.nn.Module()
    for name, value in tiny_clip.model.named_children():
        holder.add_module(name, traced if name == "visual" else value)
    for name in ("positional_embedding", "text_projection", "logit_scale"):
        holder.register_parameter(name, torch.nn.Parameter(getattr(tiny_clip.model, name).detach().clone()))
    scripted = torch.jit.script(_Forwarder(holder))
    path = tmp_path / "jit.pt"
    scripted.save(str(path))
    clip = load_clip(None, str(path))
    assert np.array_equal(_scores(clip, probe_images), _scores(tiny_clip, probe_images))


class _Forwarder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        for name, child in inner.named_children():
            self.add_module(name, child)
        for name, param in inner.named_parameters(recurse=False):
            self.register_parameter(name, param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.logit_scale


def test_open_clip_checkpoint_and_safetensors(tiny_clip, tmp_path, probe_images, monkeypatch):
    cfg_dir = tmp_path / "cfgs"
    cfg_dir.mkdir()
    (cfg_dir / "TinyTest-QuickGELU.json").write_text(json.dumps({
        "embed_dim": TINY["embed_dim"], "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 128, "patch_size": 16, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}))
    open_clip.add_model_config(cfg_dir)
    sd = tiny_clip.model.state_dict()
    ckpt = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, ckpt)
    st = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    expected = _scores(tiny_clip, probe_images)
    for path in (ckpt, st):
        clip = load_clip("TinyTest-QuickGELU", str(path))
        assert np.array_equal(_scores(clip, probe_images), expected)
    with pytest.raises(UserError, match="do not fit ViT-B-32"):
        load_clip("ViT-B-32", str(st))


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable checkpoint"),
    (b"this is not a checkpoint", "not a readable checkpoint"),
])
def test_bad_checkpoint_files(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_clip(None, str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_checkpoint_errors_say_what_to_pass(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_clip(None, str(tmp_path / "missing.pt"))
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="not an OpenAI CLIP ViT checkpoint.*--model"):
        load_clip(None, str(other))
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"a": object()}}, pickled)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_clip(None, str(pickled))  # weights_only refuses arbitrary objects


def test_unknown_tag_and_architecture():
    with pytest.raises(UserError, match="no pretrained weights 'nonsense'.*--pretrained PATH"):
        load_clip("ViT-B-16", "nonsense")
    with pytest.raises(UserError, match="unknown open_clip architecture"):
        load_clip("ViT-Q-99", "openai")


def test_no_network_is_a_one_line_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(UserError, match="no network.*--pretrained PATH"):
        load_clip("ViT-B-16", "openai")


def test_stage1_keeps_float32_weights_and_stage2_rounds_them_as_published(tiny_checkpoint, tiny_state_dict):
    """TagCLIP's loader keeps the checkpoint's values; CLIP-ES's rounds linear, convolution,
    attention-input and projection weights to fp16 (OpenAI's convert_weights), nothing else."""
    exact = load_clip(None, tiny_checkpoint).model.state_dict()
    rounded = load_clip(None, tiny_checkpoint, fp16_weights=True).model.state_dict()
    converted = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias", "c_fc.weight", "c_fc.bias",
                 "c_proj.weight", "c_proj.bias", "visual.conv1.weight", "visual.proj", "text_projection")
    changed = 0
    for key, value in tiny_state_dict.items():
        if not value.is_floating_point() or key not in exact:
            continue
        assert torch.equal(exact[key], value.float()), key
        expected = value.half().float() if key.endswith(converted) else value.float()
        assert torch.equal(rounded[key], expected), key
        changed += not torch.equal(expected, value.float())
    assert changed > 20  # the checkpoint is float32: rounding really changed it


def test_unreachable_hub_fails_at_once(monkeypatch):
    from tagclip_cls.core import models

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    downloads = []
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(models.socket, "create_connection", refuse)
    monkeypatch.setattr(models.open_clip, "create_model", lambda *a, **k: downloads.append(a))
    with pytest.raises(UserError, match="could not reach huggingface.co within 3 s"):
        load_clip("ViT-B-16", "openai")
    assert not downloads


def test_cached_hub_weights_skip_the_network_check(monkeypatch, tmp_path):
    """A file in the Hugging Face cache layout (models--ORG--NAME/snapshots/REV) is found."""
    import huggingface_hub.constants
    from tagclip_cls.core import models

    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert not models._weights_cached("ViT-B-16", "openai")
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"")
    assert models._weights_cached("ViT-B-16", "openai")
