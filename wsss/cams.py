"""Stage 2 steps 1-3: CLIP-ES class activation maps, refined by attention affinity.

Per image: layers ``0..L-2`` run once without gradients, keeping the head-averaged attention of
the affinity layers; the last block runs separately and differentiably from the output of its
``ln_1`` (the Grad-CAM layer). The scores are the softmax over [the image's tags; background
words] of the logits of the mean patch token. The gradients of all tags' scores come from the
same forward (one small backward per tag on the last block, or one batched backward), so an
image costs one pass through the network whatever its number of tags.

Refinement (SPEC "Stage 2", step 3): the mean attention of the affinity layers is
Sinkhorn-normalised (columns then rows, three rounds), symmetrised and squared; each tag's CAM
is multiplied by its box mask (``scoremap2bbox`` at ``box_threshold``) and propagated with it.
``(T @ T) * mask[None, :] @ cam`` is computed as ``T @ (T @ (mask * cam))``: the same numbers
without the ``N^3`` matrix product.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tagclip_cls.boxes import score_map_box_mask
from tagclip_cls.models import LoadedClip
from tagclip_cls.vit import attention, block_forward, embed, softmax_thread_invariant

PRECISIONS = ("fp32", "bf16")
GRAD_MODES = ("loop", "batched")
CAM_TEMPLATE = "a clean origami {}."
EPS = 1e-7  # min-max normalisation: (x - min) / (EPS + max(x - min)), as pytorch-grad-cam


@dataclass(frozen=True)
class CamConfig:
    """Constants and switches of CAM generation; the defaults are the published VOC ones."""

    affinity_layers: tuple[int | None, int | None] = (-8, -1)  # python-slice bounds over the L layers
    box_threshold: float = 0.4
    round_fp16_pos: bool = True  # quirk: positional table rounded to fp16 as in the published code
    precision: str = "fp32"  # "bf16": bfloat16 autocast on CPU, float16 on CUDA
    grad_mode: str = "loop"  # "loop": one backward per tag; "batched": one vmapped backward

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {self.grad_mode!r}")


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1] over the last two dims with the published epsilon."""
    x = x - x.amin(dim=(-2, -1), keepdim=True)
    return x / (EPS + x.amax(dim=(-2, -1), keepdim=True))


def sinkhorn_transition(affinity: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """Divide by column sums then row sums, ``rounds`` times, and symmetrise: ``(T + T.T) / 2``."""
    trans = affinity
    for _ in range(rounds):
        trans = trans / trans.sum(dim=0, keepdim=True)
        trans = trans / trans.sum(dim=1, keepdim=True)
    return (trans + trans.T) / 2


def refine_with_affinity(trans: torch.Tensor, cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``((trans @ trans) * mask[None, :]) @ cam`` for every tag (``cams``, ``masks``: ``K x N``)."""
    return (trans @ (trans @ (cams * masks).T)).T


def box_masks(cams: torch.Tensor, threshold: float) -> torch.Tensor:
    """Box masks (``K x gh x gw``, float) of each CAM's regions above ``threshold`` (scoremap2bbox)."""
    maps = cams.detach().float().cpu().numpy()
    return torch.from_numpy(np.stack([score_map_box_mask(m, threshold) for m in maps])).to(cams.device)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``K x h x w`` float32 maps to ``size = (H, W)`` with OpenCV bilinear interpolation."""
    height, width = size
    out = np.empty((maps.shape[0], height, width), dtype=np.float32)
    for k, m in enumerate(maps):
        out[k] = cv2.resize(m, (width, height))
    return out


class ClipES:
    """Refined CLIP-ES CAMs for images and their tags.

    ``class_text`` is ``K_all x E`` (one row per class, prompts with the CLIP-ES name variants)
    and ``background_text`` ``B x E``; both unit-normalised (see :func:`tagclip_cls.text.text_embeddings`).
    """

    def __init__(self, clip: LoadedClip, class_text: torch.Tensor, background_text: torch.Tensor,
                 config: CamConfig = CamConfig()):
        self.clip = clip
        self.config = config
        self.class_text = class_text.float().to(clip.device)
        self.background_text = background_text.float().to(clip.device)
        self.logit_scale = clip.model.logit_scale.exp().float()
        self.affinity_layers = list(range(clip.num_layers)[slice(*config.affinity_layers)])
        if not self.affinity_layers:
            raise ValueError(f"affinity_layers {config.affinity_layers} selects no layer of {clip.num_layers}")

    def _autocast(self):
        if self.config.precision == "fp32":
            return nullcontext()
        device = self.clip.device.type
        return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)

    @torch.no_grad()
    def trunk(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layers ``0..L-2`` on one ``3 x H' x W'`` image: tokens ``1 x T x D`` and the sum of the
        affinity layers' head-averaged attention among them (``T x T`` or None)."""
        visual = self.clip.visual
        blocks = visual.transformer.resblocks
        with self._autocast():
            x = embed(visual, image[None].to(self.clip.device), self.config.round_fp16_pos)
            attn_sum = None
            for index, block in enumerate(blocks[:-1]):
                x, probs = block_forward(block, x)
                if index in self.affinity_layers:
                    probs = probs[0].float()
                    attn_sum = probs if attn_sum is None else attn_sum + probs
        return x, attn_sum

    def grad_cams(self, x: torch.Tensor, tags: Sequence[int], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAMs ``K x gh x gw`` in [0, 1] of the tags' softmax scores, from the last block
        run on ``x`` (the trunk's tokens), and that block's head-averaged attention ``T x T``."""
        visual = self.clip.visual
        block = visual.transformer.resblocks[-1]
        text = torch.cat([self.class_text[list(tags)], self.background_text])
        with torch.enable_grad(), self._autocast():
            acts = block.ln_1(x).detach().requires_grad_(True)
            out, probs = attention(block.attn, acts, softmax=softmax_thread_invariant)
            y = x + block.ls_1(out)
            y = y + block.ls_2(block.mlp(block.ln_2(y)))
            pooled = visual.ln_post(y)[:, 1:].mean(dim=1) @ visual.proj
            with torch.autocast(self.clip.device.type, enabled=False):
                logits = self.logit_scale * F.normalize(pooled.float(), dim=-1) @ text.T
                scores = logits.softmax(dim=-1)[0]
            grads = self._tag_gradients(scores, acts, len(tags))  # K x T x D
        acts = acts.detach()[0, 1:].float()  # N x D
        weights = grads[:, 1:].float().mean(dim=1)  # K x D
        cams = (weights @ acts.T).clamp_min(0).reshape(len(tags), *grid)
        # quirk: pytorch-grad-cam normalises per layer and again after averaging its one layer
        return minmax(minmax(cams)), probs[0].detach().float()

    def _tag_gradients(self, scores: torch.Tensor, acts: torch.Tensor, num_tags: int) -> torch.Tensor:
        if self.config.grad_mode == "batched":
            one_hot = torch.eye(num_tags, scores.shape[0], dtype=scores.dtype, device=scores.device)
            (grads,) = torch.autograd.grad(scores, acts, grad_outputs=one_hot, is_grads_batched=True)
            return grads[:, 0]
        return torch.stack([torch.autograd.grad(scores[k], acts, retain_graph=k < num_tags - 1)[0][0]
                            for k in range(num_tags)])

    def __call__(self, image: torch.Tensor, tags: Sequence[int], orig_size: tuple[int, int]) -> np.ndarray:
        """Refined CAMs ``K x H x W`` (float32, [0, 1], original image size) for ``tags``, in order."""
        height, width = orig_size
        if not tags:
            return np.zeros((0, height, width), dtype=np.float32)
        patch = self.clip.patch_size
        grid = (image.shape[1] // patch, image.shape[2] // patch)
        x, attn_sum = self.trunk(image)
        cams, last_attn = self.grad_cams(x, tags, grid)
        if self.clip.num_layers - 1 in self.affinity_layers:
            attn_sum = last_attn if attn_sum is None else attn_sum + last_attn
        affinity = (attn_sum / len(self.affinity_layers))[1:, 1:]
        trans = sinkhorn_transition(affinity)
        masks = box_masks(cams, self.config.box_threshold)
        refined = refine_with_affinity(trans, cams.flatten(1), masks.flatten(1)).reshape(cams.shape)
        return resize_maps(minmax(refined).cpu().numpy(), orig_size)
