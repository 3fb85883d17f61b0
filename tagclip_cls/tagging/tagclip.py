"""TagCLIP: training-free multi-label scores from a frozen CLIP (stage 1 of the published TagCLIP code).

Per image: a dense forward with the last self-attention removed gives patch-level class
probabilities (coarse scores); dual-masking attention refinement (DMAR) spreads them along the
attention of the middle-late layers; class-wise re-identification (CWR) re-scores each likely
class on a crop with a masked class token; tags are the scores above a relative threshold.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from tagclip_cls.core.boxes import score_map_box_mask
from tagclip_cls.core.models import LoadedClip
from tagclip_cls.core.vit import block_forward, embed, project_tokens
from tagclip_cls.runtime.precision import PRECISIONS, precision_autocast



@dataclass(frozen=True)
class TagConfig:
    """Switches and constants of the method; defaults reproduce the published code."""

    dmar: bool = True  # dual-masking attention refinement
    cwr: bool = True  # class-wise re-identification (needs dmar)
    dmar_layers: tuple[int, int] = (-4, -1)  # slice of layers averaged for the refinement
    vote_min_layers: int = 4  # attention entries must be above their layer mean in >= this many
    cwr_ratio: float = 0.5  # relative threshold on the refined score matrix for CWR candidates
    tag_ratio: float = 0.5  # relative threshold on the final scores for tags
    round_fp16_pos: bool = True  # quirk: a resized positional table is rounded to fp16 as published
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.cwr and not self.dmar:
            raise ValueError("CWR works on the DMAR-refined scores: enable dmar too")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")


@dataclass
class ImageScores:
    """Stage-1 result for one image; the intermediate arrays are kept for inspection."""

    scores: np.ndarray  # K final class scores
    tags: list[int]  # chosen class indices, ascending
    local_scores: np.ndarray = field(repr=False)  # K scores before CWR
    refined: np.ndarray = field(repr=False)  # N x C refined patch scores (coarse when DMAR is off)


def select_tags(scores: np.ndarray, ratio: float) -> list[int]:
    """Classes scoring above ``min + ratio * (max - min)``; the arg-max alone if none does."""
    lo, hi = float(scores.min()), float(scores.max())
    chosen = np.flatnonzero(scores > lo + ratio * (hi - lo))
    return chosen.tolist() if chosen.size else [int(scores.argmax())]


def resize_bilinear(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(mode="bilinear", align_corners=False)`` for a ``C x H x W`` tensor, written
    with gathers and element-wise arithmetic only, so that its bits do not depend on the number
    of CPU threads (torch's kernel does), which keeps sharded runs identical to one process.
    """
    def taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # torch's kernel takes a float32 scale and rounds ``scale * (i + 0.5) - 0.5`` once (a fused
        # multiply-add): float64 arithmetic gives that exactly, plain float32 rounds the product
        # first and moves the crops by up to 7e-5
        scale = float(torch.tensor(n_in, dtype=torch.float32) / n_out)
        index = torch.arange(n_out, dtype=torch.float64, device=image.device) + 0.5
        src = (index * scale - 0.5).float().clamp(min=0)
        lo = src.floor().long().clamp(max=n_in - 1)
        return lo, (lo + 1).clamp(max=n_in - 1), src - lo

    y0, y1, wy = taps(image.shape[1], size[0])
    x0, x1, wx = taps(image.shape[2], size[1])
    rows0, rows1 = image[:, y0], image[:, y1]
    top = rows0[:, :, x0] * (1 - wx) + rows0[:, :, x1] * wx
    bottom = rows1[:, :, x0] * (1 - wx) + rows1[:, :, x1] * wx
    return top * (1 - wy)[:, None] + bottom * wy[:, None]


def minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min())


class TagCLIP:
    """Scores images against ``text`` (``C x E``, the first ``num_targets`` rows are the classes)."""

    def __init__(self, clip: LoadedClip, text: torch.Tensor, num_targets: int, config: TagConfig = TagConfig()):
        self.clip = clip
        # normalised once more, in the column-major layout the published code holds the features
        # in: that layout decides the last bits of the norm and of the logits' product
        text = text.float().to(clip.device).t().contiguous().t()
        self.text = text / text.norm(dim=-1, keepdim=True)
        self.num_targets = num_targets
        self.config = config
        self.logit_scale = clip.model.logit_scale.exp().float()
        layers = range(clip.num_layers)[slice(*config.dmar_layers)]
        if not layers:
            raise ValueError(f"dmar_layers {config.dmar_layers} selects no layer of {clip.num_layers}")
        self.avg_layers = list(layers)

    def _autocast(self):
        return precision_autocast(self.config.precision, self.clip.device.type)

    def _class_probs(self, features: torch.Tensor) -> torch.Tensor:
        """Softmax over the C text classes of CLIP logits, any leading shape."""
        logits = self.logit_scale * F.normalize(features.float(), dim=-1) @ self.text.T
        return logits.softmax(dim=-1)

    @torch.inference_mode()
    def dense_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patch probabilities ``B x N x C``, attention votes ``B x N x N`` and the averaged map.

        Votes count the layers in which an attention entry is above that layer's mean; the
        averaged map is the mean over :attr:`avg_layers`. The class token is dropped.
        """
        visual = self.clip.visual
        blocks = visual.transformer.resblocks
        grid = (images.shape[2] // self.clip.patch_size, images.shape[3] // self.clip.patch_size)
        # the published code rounds the table only when it had to be resized
        round_pos = self.config.round_fp16_pos and grid != tuple(visual.grid_size)
        with self._autocast():
            x = embed(visual, images, round_pos)
            votes = avg = None
            for index, block in enumerate(blocks):
                x, attn = block_forward(block, x, self_only=index == len(blocks) - 1)
                if not self.config.dmar:
                    continue
                attn = attn[:, 1:, 1:].float()
                above = attn > attn.mean(dim=(1, 2), keepdim=True)
                votes = above.to(torch.int16) if votes is None else votes + above
                if index in self.avg_layers:
                    avg = attn if avg is None else avg + attn
            tokens = project_tokens(visual, x)[:, 1:]
        probs = self._class_probs(tokens)
        if avg is not None:
            avg = avg / len(self.avg_layers)
        return probs, votes, avg

    def refine(self, probs: torch.Tensor, votes: torch.Tensor, avg: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """DMAR for one image: attention voting mask, then class-wise box masks (``N x C``).

        Each class column ``c`` of ``R0 = A @ P`` gives boxes, and the column is recomputed with
        the keys outside them zeroed, ``(A * m[None, :]) @ P[:, c]``, one class at a time as the
        published code does (one product for all classes has the same sums but other roundings,
        which the box thresholds of float32 checkpoints turn into score differences of 1e-3).
        """
        attn = avg * (votes >= self.config.vote_min_layers)
        refined = attn @ probs
        keys = torch.zeros_like(probs)
        boxed = []
        for c in range(refined.shape[1]):
            column = refined[:, c]
            if column.max() <= 0:
                continue
            norm = minmax(column)
            # a float32 threshold, as the published code passes a torch scalar (float32 product)
            mask = score_map_box_mask(norm.reshape(grid), np.float32(norm.mean().item()))
            keys[:, c] = torch.from_numpy(mask.reshape(-1))
            boxed.append(c)
        for c in boxed:
            refined[:, c] = ((attn * keys[None, :, c]) @ probs[:, c:c + 1])[:, 0]
        return refined

    def cwr_crops(self, image: torch.Tensor, refined: torch.Tensor, local: torch.Tensor,
                  grid: tuple[int, int]) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
        """Classes to re-identify with their crops (``3 x S x S``) and token masks (``g x g``).

        Candidates are the target classes whose local score is above the relative threshold of
        the whole refined matrix; the list stops at the first class whose box is empty.
        """
        lo, hi = refined.min(), refined.max()
        threshold = lo + self.config.cwr_ratio * (hi - lo)
        patch = self.clip.patch_size
        side = self.clip.visual.grid_size[0]
        classes, crops, masks = [], [], []
        for c in range(self.num_targets):
            if not local[c] > threshold:
                continue
            cells = (minmax(refined[:, c]) > 0.5).reshape(grid)
            rows = torch.nonzero(cells.any(dim=1)).flatten()
            cols = torch.nonzero(cells.any(dim=0)).flatten()
            if rows.numel() == 0:
                break  # a constant column has no cell above 0.5: treated as an empty box
            y1, y2 = int(rows.min()), min(int(rows.max()) + 1, grid[0] - 1)
            x1, x2 = int(cols.min()), min(int(cols.max()) + 1, grid[1] - 1)
            if y2 <= y1 or x2 <= x1:
                break  # published behaviour: an empty box ends CWR for this image
            crop = image[:, y1 * patch:y2 * patch, x1 * patch:x2 * patch]
            crops.append(resize_bilinear(crop, (side * patch, side * patch)))
            cell_mask = cells[y1:y2, x1:x2].float()[None, None]
            masks.append(F.interpolate(cell_mask, size=(side, side), mode="nearest")[0, 0])
            classes.append(c)
        return classes, crops, masks

    @torch.inference_mode()
    def masked_class_probs(self, crops: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Class probabilities of the class token when it may only attend inside each mask."""
        visual = self.clip.visual
        tokens = 1 + masks[0].numel()
        bias = torch.zeros(len(crops), 1, tokens, tokens, device=crops.device)
        bias[:, 0, 0, 1:] = (1 - masks.flatten(1)) * -1000.0
        with self._autocast():
            x = embed(visual, crops)  # crops have the native size: the table is used as it is
            for block in visual.transformer.resblocks:
                x, _ = block_forward(block, x, mask=bias.to(x.dtype), need_probs=False)
            # every token through ln_post, the projection and the logits, as published, then the
            # class token's row: products of one row round differently from those of many
            tokens = project_tokens(visual, x)
        return self._class_probs(tokens)[:, 0]

    def score(self, images: torch.Tensor) -> list[ImageScores]:
        """Score a batch of preprocessed images of one size (``B x 3 x H x W``)."""
        images = images.to(self.clip.device)
        patch = self.clip.patch_size
        grid = (images.shape[2] // patch, images.shape[3] // patch)
        probs, votes, avg = self.dense_forward(images)
        results = []
        pending: list[tuple[int, list[int]]] = []
        all_crops, all_masks = [], []
        for b in range(len(images)):
            refined = self.refine(probs[b], votes[b], avg[b], grid) if self.config.dmar else probs[b]
            local = refined[:, :self.num_targets].max(dim=0).values
            results.append(ImageScores(scores=local.cpu().numpy().copy(), tags=[],
                                       local_scores=local.cpu().numpy(), refined=refined.cpu().numpy()))
            if self.config.cwr:
                classes, crops, masks = self.cwr_crops(images[b], refined, local, grid)
                pending.append((b, classes))
                all_crops += crops
                all_masks += masks
        if all_crops:
            global_probs = self.masked_class_probs(torch.stack(all_crops), torch.stack(all_masks)).cpu().numpy()
            row = 0
            for b, classes in pending:
                for c in classes:
                    scores = results[b].scores
                    scores[c] = 0.5 * scores[c] + 0.5 * global_probs[row, c]
                    row += 1
        for result in results:
            result.tags = select_tags(result.scores, self.config.tag_ratio)
        return results


@torch.inference_mode()
def global_clip_scores(clip: LoadedClip, text: torch.Tensor, images: torch.Tensor, num_targets: int) -> np.ndarray:
    """Baseline: plain CLIP, class token of a 224-px view, softmax over the target classes."""
    side = clip.visual.grid_size[0] * clip.patch_size
    views = F.interpolate(images.to(clip.device), size=(side, side), mode="bicubic", align_corners=False)
    feats = F.normalize(clip.model.encode_image(views).float(), dim=-1)
    logits = clip.model.logit_scale.exp() * feats @ text[:num_targets].float().to(clip.device).T
    return logits.softmax(dim=-1).cpu().numpy()
