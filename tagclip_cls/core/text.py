"""Class text embeddings: prompt-template ensembles, cached on disk.

Encoding 85 templates for dozens of classes takes minutes on a CPU; the result only depends on
the text tower's weights, the class names and the templates, so it is stored under a key made
of those three and a second run spends no time on text.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from tagclip_cls.runtime.resources import data_file
from tagclip_cls.runtime.atomic_io import atomic_write
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.ids import path_inside
from tagclip_cls.core.models import LoadedClip
from tagclip_cls.core.vit import block_forward

log = logging.getLogger(__name__)

TEMPLATES = ("templates", "tagclip_85.txt")  # under data/, read through tagclip_cls.runtime.resources


def load_templates() -> list[str]:
    """The prompt templates (``data/templates/tagclip_85.txt``), each with a ``{}`` for the class name."""
    return [line for line in data_file(*TEMPLATES).read_text(encoding="utf-8").splitlines() if line.strip()]


def default_cache_dir() -> Path:
    root = os.environ.get("TAGCLIP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tagclip")
    return Path(root) / "text"


def encode_text_published(clip: LoadedClip, tokens: torch.Tensor) -> torch.Tensor:
    """The text tower with the published CLIP code's arithmetic (explicit attention with an
    additive causal mask, as ``nn.MultiheadAttention(need_weights=True)``); open_clip's
    ``encode_text`` takes fused kernels that round differently in the last bits."""
    model = clip.model
    x = model.token_embedding(tokens) + model.positional_embedding
    length = tokens.shape[1]
    causal = torch.full((length, length), float("-inf"), device=tokens.device).triu_(1)
    for block in model.transformer.resblocks:
        x, _ = block_forward(block, x, causal, need_probs=False)
    x = model.ln_final(x)
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection


@torch.inference_mode()
def encode_prompts(clip: LoadedClip, class_names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """``C x E`` unit vectors: per class, normalised template embeddings averaged, renormalised.

    As the published code: one batch per class (its templates) through
    :func:`encode_text_published`, so the bits match; both stages amplify 1e-7 changes.
    """
    feats = []
    for name in class_names:
        tokens = clip.tokenizer([t.format(name) for t in templates]).to(clip.device)
        feats.append(F.normalize(encode_text_published(clip, tokens).float(), dim=-1))
    return F.normalize(torch.stack(feats).mean(dim=1), dim=-1)


def check_prompt_lengths(tokenizer: object, class_names: Sequence[str], templates: Sequence[str]) -> None:
    """Refuse a class name whose longest prompt does not fit the text encoder's context (77
    tokens for CLIP, start and end tokens included): the tokenizer would cut it silently, and
    two long names that differ only at the end would get the same embedding. Checked where the
    tokenizer tells its token counts (open_clip's ``SimpleTokenizer``, every OpenAI CLIP)."""
    encode, context = getattr(tokenizer, "encode", None), getattr(tokenizer, "context_length", None)
    if encode is None or not isinstance(context, int):
        return
    for name in class_names:
        counts = [len(encode(t.format(name))) + 2 for t in templates]
        if max(counts) > context:
            template = templates[counts.index(max(counts))]
            raise UserError(f"class name {name!r} is too long for CLIP's text encoder: {max(counts)} tokens in the "
                            f"prompt {template!r}, at most {context} (start and end included); shorten it")


def text_embeddings(clip: LoadedClip, class_names: Sequence[str], templates: Sequence[str],
                    cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Cached :func:`encode_prompts`; ``cache_dir=None`` uses ``~/.cache/tagclip/text``. Names
    too long for the text encoder are refused first (:func:`check_prompt_lengths`)."""
    check_prompt_lengths(clip.tokenizer, class_names, templates)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    spec = {"model": clip.text_fingerprint, "classes": list(class_names), "templates": list(templates)}
    spec["exact"] = True  # the published encoder (keys of earlier entries made with it stay valid)
    key = hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:32]
    path = path_inside(cache_dir, f"{key}.pt")  # a link planted in the cache is neither read nor written
    width = clip.model.text_projection.shape[1]
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache entry is recomputed, never fatal
            cached = None
        if (isinstance(cached, torch.Tensor) and tuple(cached.shape) == (len(class_names), width)
                and bool(torch.isfinite(cached).all())):
            log.info("text embeddings from cache %s", path)
            return cached.to(clip.device)
        log.warning("ignoring unreadable or inconsistent text cache %s", path)
    log.info("encoding %d classes x %d templates", len(class_names), len(templates))
    emb = encode_prompts(clip, class_names, templates)
    try:
        atomic_write(path, lambda f: torch.save(emb.cpu(), f), "wb", cache_dir)
    except (OSError, RuntimeError) as exc:  # torch.save wraps some write failures in RuntimeError
        # the cache only saves time: a full, read-only or missing disk costs a warning, never the run
        log.warning("text cache %s not written (%s); set --cache-dir to a writable folder to save the "
                    "encoding for later runs", path, _reason(exc))
    return emb


def _reason(exc: BaseException) -> str:
    """A failed write's cause in a few words: the system's message, else the exception's first line."""
    text = getattr(exc, "strerror", None) or str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
