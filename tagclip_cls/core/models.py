"""Loading a frozen CLIP: open_clip names and tags, OpenAI checkpoints, local open_clip files.

Three ways to name weights, all returning a :class:`LoadedClip` in eval mode:

* ``pretrained="openai"`` (or any open_clip tag) with an architecture name such as ``ViT-B-16``:
  open_clip downloads the weights where the network allows.
* ``pretrained=PATH`` and no architecture: an OpenAI checkpoint, either the TorchScript archive
  OpenAI distributes (read as data, never run) or a plain state dict; the architecture (width, depth, patch size, ...) is
  read from the checkpoint itself, so any ViT size works.
* ``pretrained=PATH`` with an architecture name: an open_clip checkpoint or ``.safetensors``.

Weights on disk (a file, or a tag's weights in the Hugging Face cache) are loaded into a model
that open_clip builds on the meta device, the checkpoint's tensors becoming its weights
(:func:`_build_empty`, :func:`_assign_weights`): random initialisation and copies would take
seconds and be overwritten anyway. Only a download builds the model the plain way.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.model import build_model_from_openai_state_dict, convert_weights_to_lp

from tagclip_cls.core.random_weights import RANDOM_WEIGHTS_KEY
from tagclip_cls.core.checkpoint_file import load_weights_only, state_dict_of
from tagclip_cls.core.torchscript import is_torchscript, read_torchscript_state_dict
from tagclip_cls.runtime.arguments import looks_like_path
from tagclip_cls.runtime.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-16"
# entries of the file that are not weights: OpenAI's sizes, and the causal mask that a traced
# open_clip model keeps as a buffer (rebuilt by _assign_weights)
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size", "attn_mask")
OPENAI_KEYS = ("visual.conv1.weight", "visual.class_embedding", "visual.proj", "text_projection",
               "token_embedding.weight", "logit_scale")


@dataclass
class LoadedClip:
    """A CLIP model with what the stages need beside it."""

    model: open_clip.CLIP
    tokenizer: Callable[[list[str]], torch.Tensor]
    name: str  # human-readable: architecture and source of the weights
    random_weights: bool = False  # a checkpoint of tools/make_random_weights.py: results mean nothing

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

    @property
    def patch_size(self) -> int:
        return self.model.visual.conv1.kernel_size[0]

    @property
    def num_layers(self) -> int:
        return len(self.model.visual.transformer.resblocks)

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def fp16_rounded(self) -> "LoadedClip":
        """This CLIP with the weights stage 2's published loader rounds to fp16 (see
        :func:`load_clip`): itself when they are fp16-valued already (OpenAI's), else a copy."""
        rounded = copy.deepcopy(self.model)
        round_weights_to_fp16(rounded)
        if all(torch.equal(a, b) for a, b in zip(self.model.state_dict().values(), rounded.state_dict().values())):
            return self
        return LoadedClip(model=rounded, tokenizer=self.tokenizer, name=f"{self.name}, fp16-rounded",
                          random_weights=self.random_weights)

    @functools.cached_property
    def weights_fingerprint(self) -> str:
        """A hash of every weight's name and value as loaded (both towers): the run records of
        both stages keep it, so that weights replaced under the same path (same size, same
        modification time) are noticed. About a second for ViT-B/16 on a CPU."""
        return _tensors_fingerprint(self.model.state_dict().items())

    @functools.cached_property
    def text_fingerprint(self) -> str:
        """A hash of the text tower's weights: the key that text-embedding caches depend on.

        Computed once per loaded model (it reads every text weight: 0.1-0.3 s for ViT-B/16 on
        a CPU). The value is kept from earlier versions, so their cache entries and run records
        stay valid."""
        return _tensors_fingerprint((k, v) for k, v in self.model.state_dict().items() if not k.startswith("visual."))


def _tensors_fingerprint(items) -> str:
    """SHA-256 (24 hex digits) over ``(name, tensor)`` pairs in name order, each value as float32."""
    h = hashlib.sha256()
    for key, value in sorted(items, key=lambda item: item[0]):
        h.update(key.encode())
        h.update(value.detach().float().cpu().contiguous().numpy())  # its buffer, not a copy of it
    return h.hexdigest()[:24]


def load_clip(model_name: str | None = None, pretrained: str = "openai",
              device: str | torch.device = "cpu", fp16_weights: bool = False) -> LoadedClip:
    """Load CLIP weights named by an open_clip tag or a local file (see the module docstring).

    The weights keep the checkpoint's values, as the published TagCLIP loader keeps them (stage 1).
    ``fp16_weights`` rounds the weights of every linear and convolution layer, the attention input
    projections and both output projections to fp16 values, as the published CLIP-ES loader does
    (stage 2): it builds the model with OpenAI's ``convert_weights`` before loading the state dict.
    OpenAI's released weights are fp16-valued, so there the two are the same; float32 checkpoints
    (open_clip's other weights, fine-tuned ones) differ by about 1e-3 in the CAMs without it.
    """
    random_weights = False
    if looks_like_path(pretrained):
        path = Path(pretrained)
        if not path.is_file():
            raise UserError(f"{path}: checkpoint not found (pass an existing file, or an open_clip "
                            f"tag such as 'openai')")
        if model_name is None:
            model, random_weights = _load_openai_checkpoint(path)
            name = f"{'RANDOM weights' if random_weights else 'OpenAI checkpoint'} {path.name}"
        else:
            model = _load_open_clip_checkpoint(model_name, path)
            name = f"{model_name} from {path.name}"
        tokenizer = open_clip.get_tokenizer(model_name or DEFAULT_MODEL)
    else:
        model_name = model_name or DEFAULT_MODEL
        model = _create_from_tag(model_name, pretrained)
        name = f"{model_name} ({pretrained})"
        tokenizer = open_clip.get_tokenizer(model_name)
    _check_supported(model, name)
    # on the device first: the checkpoint's (often fp16) tensors cross to a GPU at their size, and
    # the conversions below, exact on any device, take no time there
    model = model.to(device)
    if fp16_weights:
        round_weights_to_fp16(model)
    model = model.float().eval().requires_grad_(False)
    log.info("loaded %s: %d vision layers, patch %d", name, len(model.visual.transformer.resblocks),
             model.visual.conv1.kernel_size[0])
    if random_weights:
        log.warning("%s holds random weights: tags and masks will mean nothing", pretrained)
    return LoadedClip(model=model, tokenizer=tokenizer, name=name, random_weights=random_weights)


def round_weights_to_fp16(model: torch.nn.Module) -> None:
    """Round, in place, the weights OpenAI's ``convert_weights`` stores in fp16 to fp16 values
    (open_clip's ``convert_weights_to_lp``, then back to float32)."""
    convert_weights_to_lp(model, dtype=torch.float16)
    model.float()


def _create_from_tag(model_name: str, tag: str) -> open_clip.CLIP:
    if model_name not in open_clip.list_models():
        raise UserError(f"unknown open_clip architecture {model_name!r} (see open_clip.list_models())")
    known = open_clip.list_pretrained_tags_by_model(model_name)
    if tag not in known:
        raise UserError(f"no pretrained weights {tag!r} for {model_name}; known tags: "
                        f"{', '.join(known) or 'none'}, or pass --pretrained PATH")
    cached = _weights_cached(model_name, tag)
    if cached:
        return _load_cached_tag(model_name, tag, cached)
    _check_hub_reachable(model_name, tag)
    try:
        return open_clip.create_model(model_name, pretrained=tag, force_quick_gelu=_tag_quick_gelu(model_name, tag))
    except Exception as exc:  # network errors come in many types (requests, hub, OSError)
        raise UserError(f"could not fetch {model_name} weights {tag!r} ({type(exc).__name__}: no network?); "
                        f"download them elsewhere and pass --pretrained PATH") from None


def _weights_cached(model_name: str, tag: str) -> str | None:
    """The file of ``tag``'s weights in the Hugging Face cache, or None: the safetensors twin
    where it is there (open_clip prefers it), else the named file."""
    hub = open_clip.get_pretrained_cfg(model_name, tag).get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, filename = os.path.split(hub)  # "org/name/" names open_clip's default file
    stem = os.path.splitext(filename or HF_WEIGHTS_NAME)[0]
    for name in (HF_SAFE_WEIGHTS_NAME if not filename else stem + ".safetensors", filename or HF_WEIGHTS_NAME):
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return found
    return None


def _tag_quick_gelu(model_name: str, tag: str) -> bool:
    """Whether the weights of ``tag`` were trained with QuickGELU (OpenAI's, for one). open_clip
    builds ``ViT-B-16`` with GELU and only warns for such tags; the published code, on OpenAI's
    ``clip`` package, runs QuickGELU, and so must these weights."""
    return bool(open_clip.get_pretrained_cfg(model_name, tag).get("quick_gelu", False))


def _load_cached_tag(model_name: str, tag: str, path: str) -> open_clip.CLIP:
    """What ``open_clip.create_model(model_name, pretrained=tag, force_quick_gelu=...)`` returns
    for weights already in the cache, without its random initialisation and without asking the
    hub for a newer file (open_clip's own ``load_checkpoint`` reads and converts the file, loading
    by assignment)."""
    tag_gelu = _tag_quick_gelu(model_name, tag)
    model_gelu = tag_gelu or open_clip.get_model_config(model_name).get("quick_gelu", False)
    if model_gelu != tag_gelu:  # the warning create_model gives: a QuickGELU architecture, GELU weights
        warnings.warn(f"QuickGELU mismatch between final model config (quick_gelu={model_gelu}) "
                      f"and pretrained tag '{tag}' (quick_gelu={tag_gelu}).", UserWarning)
    model = _empty_open_clip_model(model_name, f"{model_name} ({tag})", tag_gelu)
    model.load_state_dict = functools.partial(_assign_weights, model)  # what load_checkpoint calls
    try:
        open_clip.load_checkpoint(model, path, strict=True, weights_only=True, device="cpu")
    except Exception as exc:  # a damaged or partial download
        raise UserError(f"{path}: cached {model_name} weights {tag!r} unreadable ({type(exc).__name__}); "
                        f"delete the file to download it again") from None
    finally:
        del model.load_state_dict
    return model


def _check_hub_reachable(model_name: str, tag: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not after a minute of download retries, where the hub can't be reached.
    Skipped behind a proxy (the proxy, not this machine, connects) and in offline mode."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE")):
        return
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        raise UserError(f"could not reach {host} within {timeout_s:.0f} s to fetch {model_name} weights {tag!r} "
                        f"(no network?); download them elsewhere and pass --pretrained PATH") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a TorchScript archive (:mod:`~tagclip_cls.core.torchscript`: nothing
    in it runs), a safetensors file or a weights-only pickle; a zip's member sizes are checked
    before anything is inflated."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    if is_torchscript(path):
        return read_torchscript_state_dict(path)
    return state_dict_of(load_weights_only(path), path)


def _load_openai_checkpoint(path: Path) -> tuple[open_clip.CLIP, bool]:
    """The model, and whether the checkpoint is marked as random weights."""
    state_dict = read_state_dict(path)
    random_weights = state_dict.pop(RANDOM_WEIGHTS_KEY, None) is not None
    missing = [k for k in OPENAI_KEYS if k not in state_dict]
    if missing:
        raise UserError(f"{path}: not an OpenAI CLIP ViT checkpoint (missing {missing[0]}); "
                        f"for an open_clip checkpoint also pass --model NAME")
    weights = {k: v for k, v in state_dict.items() if k not in OPENAI_METADATA}
    shapes = {k: v.to("meta") for k, v in weights.items()}  # the builder reads the architecture from these
    try:
        model = _build_empty(lambda: build_model_from_openai_state_dict(shapes, cast_dtype=torch.float32))
        _assign_weights(model, weights)
    except Exception as exc:
        raise UserError(f"{path}: inconsistent OpenAI CLIP checkpoint ({type(exc).__name__}: {exc})") from None
    return model, random_weights


def _load_open_clip_checkpoint(model_name: str, path: Path) -> open_clip.CLIP:
    if model_name not in open_clip.list_models():
        raise UserError(f"unknown open_clip architecture {model_name!r} (see open_clip.list_models())")
    model = _empty_open_clip_model(model_name, f"{model_name} from {path.name}")
    state_dict = read_state_dict(path)
    try:
        _assign_weights(model, state_dict)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not fit {model_name} "
                        f"({str(exc).splitlines()[0]}); check --model") from None
    return model


def _build_empty(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Run an open_clip constructor on the meta device: the modules get their shapes and dtypes
    but no memory, and their random initialisation (about 3 s for ViT-B/16 on a CPU) does nothing.
    Every weight then comes from the checkpoint through :func:`_assign_weights`."""
    with torch.device("meta"):
        return build()


def _empty_open_clip_model(model_name: str, name: str, quick_gelu: bool = False) -> open_clip.CLIP:
    """``open_clip.create_model(model_name, force_quick_gelu=quick_gelu)`` built by
    :func:`_build_empty`, checked to be a supported CLIP before any weight is read (its warning
    that no weights were loaded is dropped: they are, next)."""
    quiet = logging.getLogger()
    random_init_warning = _DropMessage("No pretrained weights loaded for model ")
    quiet.addFilter(random_init_warning)
    try:
        model = _build_empty(lambda: open_clip.create_model(model_name, pretrained=None, device="meta",
                                                                   force_quick_gelu=quick_gelu))
    finally:
        quiet.removeFilter(random_init_warning)
    _check_supported(model, name)
    return model


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _assign_weights(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Load ``state_dict`` into a model from :func:`_build_empty` by taking its tensors as the
    parameters (no copy), then build the buffers no checkpoint holds (open_clip's causal masks).

    The parameters keep the checkpoint's dtypes until :func:`load_clip` makes them float32. Views
    and strided tensors are copied first, so that every parameter is contiguous and alone in its
    memory, as after a copy into a fresh parameter: the arithmetic on it is the same."""
    owned = {k: v if _owns_storage(v) else v.clone(memory_format=torch.contiguous_format) for k, v in state_dict.items()}
    type(model).load_state_dict(model, owned, strict=strict, assign=True)
    for module_name, module in model.named_modules():
        for buffer_name, buffer in list(module.named_buffers(recurse=False)):
            if not buffer.is_meta:
                continue
            if buffer_name != "attn_mask":
                raise RuntimeError(f"{module_name}.{buffer_name}: a buffer no checkpoint holds, which "
                                   f"tagclip_cls does not know how to build")
            # open_clip's build_causal_mask / build_attention_mask: -inf above the diagonal
            setattr(module, buffer_name, torch.full(buffer.shape, float("-inf"), dtype=buffer.dtype).triu_(1))


def _owns_storage(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is contiguous and alone in its whole storage."""
    return (tensor.is_contiguous() and tensor.storage_offset() == 0
            and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size())


def _check_supported(model: torch.nn.Module, name: str) -> None:
    visual = getattr(model, "visual", None)
    ok = (visual is not None and hasattr(visual, "conv1") and hasattr(visual, "class_embedding")
          and getattr(visual, "attn_pool", None) is None and visual.proj is not None
          and getattr(visual, "pool_type", "tok") == "tok")
    if not ok:
        raise UserError(f"{name}: only CLIP vision transformers with a class token are supported")
