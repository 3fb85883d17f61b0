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

from .io_utils import atomic_write
from .models import LoadedClip

log = logging.getLogger(__name__)

TEMPLATE_FILE = Path(__file__).resolve().parent.parent / "data" / "templates" / "tagclip_85.txt"


def load_templates(path: str | os.PathLike = TEMPLATE_FILE) -> list[str]:
    """Prompt templates, one per line, each with a ``{}`` for the class name."""
    return [line for line in Path(path).read_text().splitlines() if line.strip()]


def default_cache_dir() -> Path:
    root = os.environ.get("TAGCLIP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tagclip")
    return Path(root) / "text"


@torch.inference_mode()
def encode_prompts(clip: LoadedClip, class_names: Sequence[str], templates: Sequence[str],
                   batch_size: int = 256) -> torch.Tensor:
    """``C x E`` unit vectors: per class, normalised template embeddings averaged, renormalised."""
    prompts = [t.format(name) for name in class_names for t in templates]
    feats = []
    for start in range(0, len(prompts), batch_size):
        tokens = clip.tokenizer(prompts[start:start + batch_size]).to(clip.device)
        feats.append(F.normalize(clip.model.encode_text(tokens).float(), dim=-1))
    per_prompt = torch.cat(feats).reshape(len(class_names), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1)


def text_embeddings(clip: LoadedClip, class_names: Sequence[str], templates: Sequence[str],
                    cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Cached :func:`encode_prompts`; ``cache_dir=None`` uses ``~/.cache/tagclip/text``."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(json.dumps({"model": clip.text_fingerprint(), "classes": list(class_names),
                                     "templates": list(templates)}).encode()).hexdigest()[:32]
    path = cache_dir / f"{key}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.shape[0] == len(class_names):
                log.info("text embeddings from cache %s", path)
                return cached.to(clip.device)
        except Exception:  # a damaged cache entry is recomputed, never fatal
            log.warning("ignoring unreadable text cache %s", path)
    log.info("encoding %d classes x %d templates", len(class_names), len(templates))
    emb = encode_prompts(clip, class_names, templates)
    atomic_write(path, lambda f: torch.save(emb.cpu(), f), mode="wb")
    return emb
