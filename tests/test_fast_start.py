"""Fast start: CLIP is built without random initialisation and loaded by assignment, and the
text-cache key stays a hash of the text weights. Each fast route is compared, tensor by tensor,
with the plain open_clip load it replaces."""
import copy
import hashlib
import json
import os
import warnings

import open_clip
import pytest
import torch
from open_clip.model import build_model_from_openai_state_dict
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode

from tagclip_cls.core import models
from tagclip_cls.core.models import OPENAI_METADATA, load_clip, round_weights_to_fp16
from tagclip_cls.core.text import text_embeddings
from tagclip_cls.runtime.errors import UserError

from conftest import TINY

TINY_ARCH = "TinyFastStart-QuickGELU"


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, the non-persistent ones (the causal mask) included."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _assert_identical(fast: torch.nn.Module, plain: torch.nn.Module) -> None:
    a, b = _tensors(fast), _tensors(plain)
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        assert (x.dtype, x.device, x.shape, x.stride(), x.requires_grad) == \
               (y.dtype, y.device, y.shape, y.stride(), y.requires_grad), key
        assert torch.equal(x, y), key
    assert type(fast) is type(plain)
    assert [type(m) for m in fast.modules()] == [type(m) for m in plain.modules()]
    # every parameter owns its memory, as after a copy into a freshly allocated one
    pointers = [p.data_ptr() for p in fast.parameters()]
    assert len(set(pointers)) == len(pointers)


def _plain_openai(state_dict: dict[str, torch.Tensor], fp16_weights: bool) -> torch.nn.Module:
    """The load before fast start: open_clip builds and randomly initialises the model, then the
    checkpoint is copied in."""
    model = build_model_from_openai_state_dict(dict(state_dict), cast_dtype=torch.float32).float()
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in OPENAI_METADATA})
    if fp16_weights:
        round_weights_to_fp16(model)
    return model.float().eval().requires_grad_(False)


@pytest.mark.parametrize("stored", ["float32", "float16"])
@pytest.mark.parametrize("fp16_weights", [False, True])
def test_openai_checkpoint_loads_as_open_clip_loads_it(tiny_state_dict, tmp_path, stored, fp16_weights):
    """float16: OpenAI's released files hold most weights in fp16; float32: ours and fine-tuned ones."""
    state = {k: v.half() if stored == "float16" and v.ndim >= 2 else v for k, v in tiny_state_dict.items()}
    path = tmp_path / "openai.pt"
    torch.save(state, path)
    fast = load_clip(None, str(path), fp16_weights=fp16_weights).model
    _assert_identical(fast, _plain_openai(state, fp16_weights))


def test_shared_or_strided_checkpoint_tensors_become_parameters_of_their_own(tiny_state_dict, tmp_path):
    state = dict(tiny_state_dict)
    key = "visual.transformer.resblocks.0.mlp.c_fc.weight"
    state[key] = state[key].t().contiguous().t()  # same values, transposed strides
    packed = torch.cat([state["visual.proj"].flatten(), state["text_projection"].flatten()])
    state["visual.proj"] = packed[:state["visual.proj"].numel()].view_as(state["visual.proj"])
    state["text_projection"] = packed[state["visual.proj"].numel():].view_as(state["text_projection"])
    path = tmp_path / "views.pt"
    torch.save(state, path)
    _assert_identical(load_clip(None, str(path)).model, _plain_openai(state, False))


def _register_tiny(tmp_path, name: str, quick_gelu: bool) -> None:
    """Register ``name``, an open_clip architecture of the tiny CLIP's shape."""
    cfg_dir = tmp_path / f"cfgs_{name}"
    cfg_dir.mkdir()
    (cfg_dir / f"{name}.json").write_text(json.dumps({
        "embed_dim": TINY["embed_dim"], "quick_gelu": quick_gelu,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 128, "patch_size": 16, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}))
    open_clip.add_model_config(cfg_dir)


@pytest.fixture()
def tiny_arch(tmp_path, tiny_clip):
    """A registered open_clip architecture of the tiny CLIP, and its weights in open_clip's layout."""
    _register_tiny(tmp_path, TINY_ARCH, quick_gelu=True)
    return {k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}


def test_open_clip_checkpoint_loads_as_create_model_loads_it(tiny_arch, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(tiny_arch, str(path))
    plain = open_clip.create_model(TINY_ARCH, pretrained=str(path)).float().eval().requires_grad_(False)
    _assert_identical(load_clip(TINY_ARCH, str(path)).model, plain)


def _cache_tag(weights: dict[str, torch.Tensor] | bytes, root, monkeypatch, quick_gelu: bool = True,
               arch: str = TINY_ARCH):
    """Tag ``fake`` of ``arch``, its file in a Hugging Face cache under ``root``."""
    import huggingface_hub.constants

    repo = root / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    file = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    if isinstance(weights, bytes):
        file.write_bytes(weights)
    else:
        save_file(weights, str(file))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the reference may not go online
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, arch,
                        {"fake": open_clip.pretrained._pcfg(hf_hub="org/tiny/", quick_gelu=quick_gelu)})


@pytest.mark.parametrize("tag_quick_gelu", [True, False])
def test_cached_tag_loads_as_create_model_loads_it_without_the_network(tiny_arch, tmp_path, monkeypatch,
                                                                     tag_quick_gelu):
    _cache_tag(tiny_arch, tmp_path / "hub", monkeypatch, tag_quick_gelu)
    with warnings.catch_warnings(record=True) as expected:
        warnings.simplefilter("always")
        plain = open_clip.create_model(TINY_ARCH, pretrained="fake").float().eval().requires_grad_(False)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was asked")

    monkeypatch.setattr(models.socket, "create_connection", no_network)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", no_network)
    with warnings.catch_warnings(record=True) as given:
        warnings.simplefilter("always")
        fast = load_clip(TINY_ARCH, "fake").model
    _assert_identical(fast, plain)
    assert [str(w.message) for w in given if "QuickGELU" in str(w.message)] == \
           [str(w.message) for w in expected if "QuickGELU" in str(w.message)]


@pytest.mark.parametrize("cached", [True, False])
def test_a_quick_gelu_tag_runs_quick_gelu_on_a_gelu_architecture(tiny_arch, tmp_path, monkeypatch, cached):
    """OpenAI's tags carry quick_gelu in their settings while open_clip's ``ViT-B-16`` config says
    GELU (open_clip then only warns): the model must run QuickGELU, x * sigmoid(1.702 x), as the
    published code (OpenAI's clip package) does; from the cache and through open_clip's download."""
    arch = "TinyFastStart-GELU"
    _register_tiny(tmp_path, arch, quick_gelu=False)
    _cache_tag(tiny_arch, tmp_path / "hub", monkeypatch, quick_gelu=True, arch=arch)
    if not cached:  # open_clip.create_model fetches the file (from the offline cache here)
        monkeypatch.setattr(models, "_weights_cached", lambda *args: None)
        monkeypatch.setattr(models, "_check_hub_reachable", lambda *args: None)
    with warnings.catch_warnings(record=True) as given:
        warnings.simplefilter("always")
        model = load_clip(arch, "fake").model
    assert not [w for w in given if "QuickGELU" in str(w.message)]
    for mlp in (model.visual.transformer.resblocks[5].mlp, model.transformer.resblocks[1].mlp):
        x = torch.randn(3, mlp.c_fc.in_features)
        hidden = mlp.c_fc(x)
        assert torch.allclose(mlp(x), mlp.c_proj(hidden * torch.sigmoid(1.702 * hidden)), atol=1e-6)


def test_damaged_cached_tag_is_a_one_line_error(tiny_arch, tmp_path, monkeypatch):
    _cache_tag(b"cut short", tmp_path / "hub", monkeypatch)
    with pytest.raises(UserError, match="open_clip_model.safetensors: cached .* unreadable .*delete the file"):
        load_clip(TINY_ARCH, "fake")


class _RandomFills(TorchDispatchMode):
    """Counts the random fills (what module initialisation does) that write real memory."""

    RANDOM = {"normal_", "uniform_", "randn", "rand", "bernoulli_", "exponential_"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in self.RANDOM and not any(isinstance(a, torch.Tensor) and a.is_meta for a in (out, *args)):
            self.count += 1
        return out


def test_loading_draws_no_random_initialisation(tiny_checkpoint, tiny_arch, tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(tiny_arch, str(path))
    for model_name, source in ((None, tiny_checkpoint), (TINY_ARCH, str(path))):
        with _RandomFills() as fills:
            load_clip(model_name, source)
        assert fills.count == 0, model_name
    with _RandomFills() as fills:  # the probe sees a plain build
        open_clip.create_model(TINY_ARCH, pretrained=None)
    assert fills.count > 10


def _published_fingerprint(model: torch.nn.Module) -> str:
    """The text-cache key as earlier versions computed it (existing cache entries use it)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        if not key.startswith("visual."):
            h.update(key.encode())
            h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def test_text_fingerprint_keeps_its_value(tiny_clip, tiny_checkpoint):
    assert tiny_clip.text_fingerprint == _published_fingerprint(tiny_clip.model)
    rounded = load_clip(None, tiny_checkpoint, fp16_weights=True)
    assert rounded.text_fingerprint == _published_fingerprint(rounded.model) != tiny_clip.text_fingerprint


def test_cache_misses_when_the_file_changes_in_place(tiny_state_dict, tmp_path):
    """Same path, same size, same modification time, one text weight changed: a new entry."""
    path = tmp_path / "w.pt"
    torch.save(tiny_state_dict, path)
    stat = path.stat()
    cache = tmp_path / "cache"
    first = text_embeddings(load_clip(None, str(path)), ["cat"], ["a {}."], cache_dir=cache)
    changed = copy.deepcopy(tiny_state_dict)
    changed["ln_final.bias"][0] += 1.0
    torch.save(changed, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    second = text_embeddings(load_clip(None, str(path)), ["cat"], ["a {}."], cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 2 and not torch.equal(first, second)
