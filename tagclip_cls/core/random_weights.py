"""Randomly initialised CLIP weights in OpenAI's state-dict layout.

The real weights cannot be downloaded everywhere; tests, benchmarks and offline demos use these
instead. They have exactly the compute of the real model of the same shape; their tags mean
nothing. Saved checkpoints carry the entry :data:`RANDOM_WEIGHTS_KEY`, so that every stage
that loads them records ``random_weights: true`` and every report says so in red.
"""
from __future__ import annotations

import os

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from tagclip_cls.runtime.atomic_io import atomic_write

RANDOM_WEIGHTS_KEY = "tagclip_random_weights"  # a non-weight entry marking a random checkpoint


def random_openai_state_dict(vision_width: int = 768, vision_layers: int = 12, patch_size: int = 16,
                             image_size: int = 224, embed_dim: int = 512, text_width: int = 512,
                             text_layers: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict that ``build_model_from_openai_state_dict`` accepts (heads = width // 64)."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(layers=vision_layers, width=vision_width, head_width=64,
                                 patch_size=patch_size, image_size=image_size),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=text_width,
                             heads=max(1, text_width // 64), layers=text_layers),
        quick_gelu=True)
    with torch.no_grad():
        model.logit_scale.fill_(torch.log(torch.tensor(100.0)))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_random_openai_checkpoint(path: str | os.PathLike, **kwargs: int) -> None:
    """Write :func:`random_openai_state_dict` to ``path`` (atomically), marked as random weights."""
    state = {**random_openai_state_dict(**kwargs), RANDOM_WEIGHTS_KEY: torch.tensor(1)}
    atomic_write(path, lambda f: torch.save(state, f), mode="wb")
