"""Stage 2 steps 1-3: CLIP-ES class activation maps, refined by attention affinity.

Per image: layers ``0..L-2`` run once without gradients, keeping the head-averaged attention of
the affinity layers; the last block runs separately and differentiably from the output of its
``ln_1`` (the Grad-CAM layer). The scores are the softmax over [the image's tags; background
words] of the logits of the mean patch token. The gradients of all tags' scores come from the
same forward (one small backward per tag on the last block, or one batched backward), so an
image costs one pass through the network whatever its number of tags. Several images share
that pass (:meth:`ClipES.batch`); images of different sizes are padded to the longest token
sequence, with a key mask that keeps the padding out of every real token's attention.

Refinement (CLIP-ES, step 3): the mean attention of the affinity layers is
Sinkhorn-normalised (columns then rows, three rounds), symmetrised and squared once per image;
each tag's CAM is propagated with its box mask (``scoremap2bbox`` at ``box_threshold``) on the
columns. CAMs min-max normalised at grid size are resized to the image (OpenCV bilinear).

With random or weak weights the refined maps can be nearly flat (a range of 1e-6), and their final
min-max normalisation turns last-bit differences into visible ones. So the order of operations
follows the published code where it decides rounding: Grad-CAM weights and sums in numpy on the
same array layout, ``T @ T`` then the mask, normalisation in numpy float32. On CPU the fp32
result then has the same bits as the published code on the same machine at the same thread count
(another CPU kind rounds differently: ``tests/parity_tolerance.py``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch

from tagclip_cls.core.boxes import boxed_columns, score_map_box_masks
from tagclip_cls.core.models import LoadedClip
from tagclip_cls.core.vit import attention, block_forward, embed, embed_padded, same_size_batch
from tagclip_cls.runtime.precision import ATTENTION_MODES, PRECISIONS, activation_dtype, precision_autocast
from wsss.masks import GRAD_MODES

CAM_TEMPLATE = "a clean origami {}."
EPS = 1e-7  # min-max normalisation: (x - min) / (EPS + max(x - min)), as pytorch-grad-cam


@dataclass(frozen=True)
class CamConfig:
    """Constants and switches of CAM generation; the defaults are the published VOC ones."""

    affinity_layers: tuple[int | None, int | None] = (-8, -1)  # python-slice bounds over the L layers
    box_threshold: float = 0.4
    round_fp16_pos: bool = True  # quirk: positional table rounded to fp16 as in the published code
    precision: str = "fp32"  # or "bf16"/"fp16": autocast to that type, as in stage 1
    grad_mode: str = "loop"  # "loop": one backward per tag; "batched": one vmapped backward
    attention: str = "exact"  # "fused": trunk layers outside the affinity ones use scaled_dot_product_attention

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")
        if self.grad_mode not in GRAD_MODES:
            raise ValueError(f"grad_mode must be one of {GRAD_MODES}, got {self.grad_mode!r}")


@dataclass(frozen=True)
class Tokens:
    """Where the real tokens of a batch are: ``mask`` (additive, on the keys) and ``lengths``
    (real patch tokens per image, padding after them) for a padded batch of several sizes;
    ``None`` both when every token is real."""

    mask: torch.Tensor | None = None
    lengths: list[int] | None = None

    def counts(self, batch: int, patches: int) -> list[int]:
        """The real patch tokens of each of the ``batch`` images (``patches`` each when unpadded)."""
        return self.lengths if self.lengths is not None else [patches] * batch


def minmax(x: np.ndarray) -> np.ndarray:
    """``(x - min) / (EPS + max)`` in float32 over the whole array (pytorch-grad-cam's scaling)."""
    x = x - np.min(x)
    return x / (EPS + np.max(x))


def grad_cam(acts: torch.Tensor, grads: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """Grad-CAMs ``K x gh x gw`` in [0, 1] from patch activations ``N x D`` and per-tag gradients
    ``K x N x D``: channel weight = mean gradient, ReLU of the weighted channel sum, min-max.

    Computed in numpy on ``1 x D x gh x gw`` views, as pytorch-grad-cam does (same rounding); the
    min-max is applied twice, as there (per layer, then after averaging its single layer). Tensors
    on a GPU take :func:`grad_cam_on_device`.
    """
    gh, gw = grid
    if acts.device.type != "cpu":
        return grad_cam_on_device(acts, grads, grid)

    def channels_first(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().reshape(1, gh, gw, -1).permute(0, 3, 1, 2).numpy()

    act = channels_first(acts)
    cams = []
    for grad in grads:
        weights = np.mean(channels_first(grad), axis=(2, 3))
        cam = np.maximum((weights[:, :, None, None] * act).sum(axis=1), 0).astype(np.float32)
        cams.append(minmax(minmax(cam))[0])
    return np.stack(cams)


def grad_cam_on_device(acts: torch.Tensor, grads: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """:func:`grad_cam` with the channel weights and sums computed where the tensors are, in one
    product for all tags, so that a GPU sends ``K x N`` values to the host instead of ``1 + K``
    activation-sized arrays (other roundings than numpy's)."""
    weights = grads.detach().float().mean(dim=1)  # K x D
    cams = torch.relu(weights @ acts.detach().float().T).reshape(-1, 1, *grid).cpu().numpy()
    return np.stack([minmax(minmax(cam))[0] for cam in cams])


def sinkhorn_transition(affinity: torch.Tensor, rounds: int = 3) -> torch.Tensor:
    """Divide by column sums then row sums, ``rounds`` times, and symmetrise: ``(T + T.T) / 2``."""
    trans = affinity
    for _ in range(rounds):
        trans = trans / trans.sum(dim=0, keepdim=True)
        trans = trans / trans.sum(dim=1, keepdim=True)
    return (trans + trans.T) / 2


def refine_with_affinity(trans: torch.Tensor, cams: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``((trans @ trans) * mask[None, :]) @ cam`` for every tag (``cams``, ``masks``: ``K x N``):
    :func:`~tagclip_cls.core.boxes.boxed_columns` with the tags as columns, one tag at a time on a
    CPU (the published bits), in one product elsewhere."""
    return boxed_columns(trans @ trans, cams.T, masks.T, one_product=trans.device.type != "cpu").T


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``K x h x w`` float32 maps to ``size = (H, W)`` with OpenCV bilinear interpolation."""
    height, width = size
    out = np.empty((maps.shape[0], height, width), dtype=np.float32)
    for k, m in enumerate(maps):
        out[k] = cv2.resize(m, (width, height))
    return out


@contextmanager
def _threads_at_least_two() -> Iterator[None]:
    """PyTorch's softmax backward rounds differently with one CPU thread than with any other
    count; torchrun ranks with fewer threads each must still write the bits of one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class ClipES:
    """Refined CLIP-ES CAMs for images and their tags.

    ``class_text`` is ``K_all x E`` (one row per class, prompts with the CLIP-ES name variants)
    and ``background_text`` ``B x E``; both unit-normalised (see :func:`tagclip_cls.core.text.text_embeddings`).
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
        return precision_autocast(self.config.precision, self.clip.device.type)

    @torch.no_grad()
    def trunk(self, images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], Tokens]:
        """Layers ``0..L-2`` on ``B x 3 x H' x W'`` images of one size, or on ``3 x H' x W'``
        images of several (one padded pass: :func:`~tagclip_cls.core.vit.pad_tokens`, each image
        embedded with its own grid's positional table): tokens ``B x T x D``, the head-averaged
        attention (``B x N x N``, class token dropped) of those among the affinity layers, and
        where each image's real tokens are."""
        visual = self.clip.visual
        blocks = visual.transformer.resblocks
        with self._autocast():
            if isinstance(images, torch.Tensor):
                x, tokens = embed(visual, images.to(self.clip.device), self.config.round_fp16_pos), Tokens()
            else:
                x, mask, lengths = embed_padded(visual, [image.to(self.clip.device) for image in images],
                                                lambda grid: self.config.round_fp16_pos,
                                                activation_dtype(self.config.precision))
                tokens = Tokens(mask, lengths if mask is not None else None)
            maps = []
            for index, block in enumerate(blocks[:-1]):
                keep = index in self.affinity_layers
                x, probs = block_forward(block, x, tokens.mask, need_probs=keep, fused=self.config.attention == "fused")
                if keep:
                    maps.append(probs[:, 1:, 1:].float())
        return x, maps, tokens

    def grad_cams(self, x: torch.Tensor, tags: Sequence[Sequence[int]], grids: Sequence[tuple[int, int]],
                  tokens: Tokens = Tokens()) -> tuple[list[np.ndarray], torch.Tensor]:
        """Per image, the Grad-CAMs ``K x gh x gw`` in [0, 1] of its tags' softmax scores, from the
        last block run on ``x`` (the trunk's tokens, ``B x T x D``, laid out as ``tokens`` says),
        and that block's head-averaged attention (``B x N x N``). Each image's scores depend on
        its own tokens only, so one backward pass gives the k-th tag's gradient of every image."""
        visual = self.clip.visual
        block = visual.transformer.resblocks[-1]
        with torch.enable_grad(), self._autocast():
            acts = block.ln_1(x).detach().requires_grad_(True)
            out, probs = attention(block.attn, acts, tokens.mask)
            y = x + block.ls_1(out)
            y = y + block.ls_2(block.mlp(block.ln_2(y)))
            patches = visual.ln_post(y)[:, 1:]
            if tokens.lengths is None:
                pooled = patches.mean(dim=1) @ visual.proj
            else:  # each image's mean over its own patches, the padding left out
                pooled = torch.stack([patches[b, :n].mean(dim=0) for b, n in enumerate(tokens.lengths)]) @ visual.proj
            with torch.autocast(self.clip.device.type, enabled=False):
                pooled = pooled.float()
                feature = pooled / pooled.norm(dim=1, keepdim=True)
                scores = []
                for b, image_tags in enumerate(tags):
                    text = torch.cat([self.class_text[list(image_tags)], self.background_text])
                    text = text / text.norm(dim=1, keepdim=True)
                    scores.append((self.logit_scale * feature[b:b + 1] @ text.T).softmax(dim=-1)[0])
            with _threads_at_least_two():
                grads = self._tag_gradients(scores, acts, [len(t) for t in tags])  # per image K x T x D
        cams = [grad_cam(acts[b, 1:1 + n], g[:, 1:1 + n], grid)
                for b, (g, grid, n) in enumerate(zip(grads, grids, tokens.counts(len(grads), acts.shape[1] - 1)))]
        return cams, probs[:, 1:, 1:].detach().float()

    def _tag_gradients(self, scores: list[torch.Tensor], acts: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Per image ``b``, the gradients (``K_b x T x D``) of its first ``counts[b]`` scores."""
        most = max(counts)
        if self.config.grad_mode == "batched":
            flat = torch.cat(scores)
            one_hot = torch.zeros(most, flat.shape[0], dtype=flat.dtype, device=flat.device)
            start = 0
            for image_scores, count in zip(scores, counts):
                one_hot[torch.arange(count), start + torch.arange(count)] = 1
                start += image_scores.shape[0]
            (grads,) = torch.autograd.grad(flat, acts, grad_outputs=one_hot, is_grads_batched=True)
            return [grads[:count, b] for b, count in enumerate(counts)]
        per_tag = []
        for k in range(most):
            terms = [image_scores[k] for image_scores, count in zip(scores, counts) if count > k]
            target = terms[0] if len(terms) == 1 else torch.stack(terms).sum()
            per_tag.append(torch.autograd.grad(target, acts, retain_graph=k < most - 1)[0])
        return [torch.stack([g[b] for g in per_tag[:count]]) for b, count in enumerate(counts)]

    def __call__(self, image: torch.Tensor, tags: Sequence[int], orig_size: tuple[int, int]) -> np.ndarray:
        """Refined CAMs ``K x H x W`` (float32, [0, 1], original image size) for ``tags``, in order."""
        return self.batch(image[None], [tags], [orig_size])[0]

    def batch(self, images: torch.Tensor | Sequence[torch.Tensor], tags: Sequence[Sequence[int]],
              orig_sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """:meth:`__call__` for several images in one pass: the trunk, the last block and each tag's
        backward pass run once for all of them (a GPU sees a few large operations instead of
        many small ones); the affinity refinement is per image. ``images``: ``B x 3 x H' x W'``,
        or ``3 x H' x W'`` tensors whose sizes may differ (padded and masked, see :meth:`trunk`;
        tensors of one size are stacked as they are)."""
        outputs: list = [np.zeros((0, height, width), dtype=np.float32) for height, width in orig_sizes]
        chosen = [b for b, image_tags in enumerate(tags) if image_tags]
        if not chosen:
            return outputs
        images = [images[b] for b in chosen]
        tags, sizes = [tags[b] for b in chosen], [orig_sizes[b] for b in chosen]
        patch = self.clip.patch_size
        grids = [(image.shape[1] // patch, image.shape[2] // patch) for image in images]
        stacked = same_size_batch(images)
        x, maps, tokens = self.trunk(images if stacked is None else stacked)
        cams, last_attn = self.grad_cams(x, tags, grids, tokens)
        if self.clip.num_layers - 1 in self.affinity_layers:
            maps.append(last_attn)
        for i, (b, n) in enumerate(zip(chosen, tokens.counts(len(chosen), x.shape[1] - 1))):
            trans = sinkhorn_transition(torch.stack([m[i, :n, :n] for m in maps]).mean(dim=0))
            masks = torch.from_numpy(score_map_box_masks(cams[i], self.config.box_threshold)).to(trans.device)
            cams_t = torch.from_numpy(cams[i]).to(trans.device)
            refined = refine_with_affinity(trans, cams_t.flatten(1), masks.flatten(1)).reshape(cams[i].shape)
            refined = np.stack([minmax(m) for m in refined.cpu().numpy()])
            outputs[b] = resize_maps(refined, sizes[i])
        return outputs
