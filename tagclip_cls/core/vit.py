"""Building blocks for running an open_clip vision transformer on images of any size.

open_clip's own forward pools to one vector; both stages need more: every token, the attention
probabilities of every layer (averaged over heads) and attention masks. These functions reuse
the model's weights and follow the same arithmetic as ``nn.MultiheadAttention``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resized_pos_embed(visual: nn.Module, grid: tuple[int, int], round_fp16: bool = False) -> torch.Tensor:
    """The positional table for a ``gh x gw`` grid: class row kept, grid resized bilinearly.

    ``round_fp16`` rounds the table to half precision as the published code does (its model runs
    in fp16 there); the effect is below 1e-3.
    """
    table = visual.positional_embedding
    cls_row, grid_rows = table[:1], table[1:]
    side = int(round(grid_rows.shape[0] ** 0.5))
    if (side, side) != tuple(grid):
        grid_rows = grid_rows.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid_rows = F.interpolate(grid_rows, size=grid, mode="bilinear", align_corners=False)
        grid_rows = grid_rows.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
    out = torch.cat([cls_row, grid_rows], dim=0)
    return out.half().to(table.dtype) if round_fp16 else out


def embed(visual: nn.Module, images: torch.Tensor, round_fp16_pos: bool = False) -> torch.Tensor:
    """Patch embedding + class token + positional table + ``ln_pre``: ``B x (1+N) x D``."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    grid = (x.shape[2], x.shape[3])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + resized_pos_embed(visual, grid, round_fp16_pos).to(x.dtype)
    return visual.ln_pre(x)


def pad_tokens(sequences: Sequence[torch.Tensor], mask_dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token sequences ``1 x T_i x D`` of different lengths as one batch ``B x T x D`` (zeros after
    each sequence's end), with the additive mask ``B x 1 x 1 x T`` for :func:`attention` that
    gives the padded keys -inf: no real token attends to padding, so the real tokens compute what
    they compute alone (up to float rounding). Padded queries still attend to the real tokens;
    their outputs are never read. ``mask_dtype``: that of the attention logits (the autocast
    dtype), so that adding the mask does not promote the softmax to another precision.
    Sequences of one length (grids 24 x 32 and 32 x 24, say) are just stacked, without a mask.
    """
    length = max(s.shape[1] for s in sequences)
    if all(s.shape[1] == length for s in sequences):
        return torch.cat(list(sequences)), None
    first = sequences[0]
    x = first.new_zeros(len(sequences), length, first.shape[2])
    mask = torch.zeros(len(sequences), 1, 1, length, dtype=mask_dtype, device=first.device)
    for b, seq in enumerate(sequences):
        x[b, :seq.shape[1]] = seq[0]
        mask[b, :, :, seq.shape[1]:] = float("-inf")
    return x, mask


def same_size_batch(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | None:
    """``images`` as one ``B x 3 x H x W`` tensor when they share a size, else ``None``."""
    if isinstance(images, torch.Tensor):
        return images
    return torch.stack(list(images)) if len({image.shape for image in images}) == 1 else None


def embed_padded(visual: nn.Module, images: Sequence[torch.Tensor], round_fp16_pos: Callable[[tuple[int, int]], bool],
                 mask_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """``3 x H x W`` images of different sizes as one batch: each embedded on its own, with its own
    grid's positional table (rounded to fp16 where ``round_fp16_pos(grid)``), then
    :func:`pad_tokens`. Returns the tokens ``B x T x D``, the key mask (``None`` when every
    sequence has one length) and each image's number of patch tokens."""
    patch = visual.conv1.kernel_size[0]
    sequences = [embed(visual, image[None], round_fp16_pos((image.shape[1] // patch, image.shape[2] // patch)))
                 for image in images]
    x, mask = pad_tokens(sequences, mask_dtype)
    return x, mask, [seq.shape[1] - 1 for seq in sequences]


def attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None = None,
              self_only: bool = False, need_probs: bool = True, fused: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head self-attention returning the output and the head-averaged probabilities
    (``None`` unless ``need_probs``).

    ``mask`` is additive, broadcastable to ``B x heads x T x T``. With ``self_only`` each token
    attends only to itself (additive -100 off the diagonal, as TagCLIP removes the last
    self-attention); the probabilities returned are then those *before* that mask.
    ``fused``: when no probabilities are asked for, use ``scaled_dot_product_attention`` (flash or
    memory-efficient kernels on a GPU), which rounds differently from the explicit product.
    """
    batch, tokens, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    if fused and not need_probs and not self_only:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask.to(q.dtype))
        return attn.out_proj(out.transpose(1, 2).reshape(batch, tokens, width)), None
    logits = (q * (width // heads) ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        logits = logits + mask
    probs = logits.softmax(dim=-1)
    mean_probs = probs.mean(dim=1) if need_probs else None
    if self_only:
        eye = torch.eye(tokens, dtype=torch.bool, device=x.device)
        off_diagonal = torch.zeros(tokens, tokens, dtype=logits.dtype, device=x.device).masked_fill(~eye, -100.0)
        probs = (logits + off_diagonal).softmax(dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(batch, tokens, width)
    return attn.out_proj(out), mean_probs


def block_forward(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None,
                  self_only: bool = False, need_probs: bool = True, fused: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One residual attention block (``ln_1``, attention, ``ln_2``, MLP) and its head-averaged attention
    (``None`` unless ``need_probs``); ``fused`` as in :func:`attention`."""
    out, probs = attention(block.attn, block.ln_1(x), mask, self_only, need_probs, fused)
    x = x + block.ls_1(out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, probs


def class_token_features(visual: nn.Module, images: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """The plain image embedding (``B x E``): patch embedding (table resized to the input's grid),
    every block without attention maps (``fused`` as in :func:`attention`), the class token's
    ``ln_post`` and projection: what open_clip's ``encode_image`` computes at its native size."""
    x = embed(visual, images)
    for block in visual.transformer.resblocks:
        x, _ = block_forward(block, x, need_probs=False, fused=fused)
    return visual.ln_post(x[:, 0]) @ visual.proj


def project_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ln_post`` and the projection applied to every token."""
    return visual.ln_post(x) @ visual.proj
