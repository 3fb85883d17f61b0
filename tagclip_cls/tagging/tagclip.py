"""TagCLIP: training-free multi-label scores from a frozen CLIP (stage 1 of the published TagCLIP code).

Per image: a dense forward with the last self-attention removed gives patch-level class
probabilities (coarse scores); dual-masking attention refinement (DMAR) spreads them along the
attention of the middle-late layers; class-wise re-identification (CWR) re-scores each likely
class on a crop with a masked class token; tags are the scores above a relative threshold.
Images of different sizes can share one padded, masked forward (:meth:`TagCLIP.dense_forward_mixed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tagclip_cls.core.boxes import boxed_columns, score_map_box_masks
from tagclip_cls.core.models import LoadedClip
from tagclip_cls.core.vit import (block_forward, class_token_features, embed, embed_padded, project_tokens,
                                  same_size_batch)
from tagclip_cls.runtime.precision import ATTENTION_MODES, PRECISIONS, activation_dtype, precision_autocast



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
    attention: str = "exact"  # "fused": the CWR crops' attention through scaled_dot_product_attention

    def __post_init__(self) -> None:
        if self.cwr and not self.dmar:
            raise ValueError("CWR works on the DMAR-refined scores: enable dmar too")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}")


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
    Elsewhere (a GPU) torch's own kernel: one launch instead of about twenty, and deterministic.
    """
    if image.device.type != "cpu":
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]

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


def class_box_keys(refined: torch.Tensor, grid: tuple[int, int]) -> tuple[list[int], torch.Tensor]:
    """DMAR's box masks: the classes with a positive column in ``refined`` (``N x C``) and their
    masks (``N x len(classes)`` float32). Each column is min-max scaled and boxed
    (:func:`score_map_box_masks`) at its own mean, a float32 threshold as the published code
    passes a torch scalar. The scaling is element-wise and each mean is taken over a contiguous
    row (the classes are rows here), so the bits are those of the published column-by-column
    computation.
    """
    per_class = refined.t().contiguous()
    positive = per_class.max(dim=1).values > 0
    rows = per_class[positive]
    lo, hi = rows.min(dim=1, keepdim=True).values, rows.max(dim=1, keepdim=True).values
    rows = (rows - lo) / (hi - lo)
    masks = score_map_box_masks(rows.reshape(len(rows), *grid).numpy(), rows.mean(dim=1).numpy())
    return torch.nonzero(positive).flatten().tolist(), torch.from_numpy(masks.reshape(len(rows), refined.shape[0]).T)


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

    def _round_pos(self, grid: tuple[int, int]) -> bool:
        """Whether the positional table of ``grid`` is rounded to fp16: the published code rounds
        it only when it had to be resized."""
        return self.config.round_fp16_pos and tuple(grid) != tuple(self.clip.visual.grid_size)

    def _encode(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: list[int] | None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The blocks on embedded tokens ``x`` (``mask``: additive key mask or ``None``): patch
        probabilities ``B x (T-1) x C``, attention votes ``B x (T-1) x (T-1)`` and the averaged
        map (votes and map ``None`` without DMAR).

        ``lengths``: the number of real patch tokens of each row (padding after them), or ``None``
        when all are real. A layer's mean is then taken over each image's own ``n x n`` block,
        for all images in a few batched operations, and votes outside that block are 0, so that
        padding never enters a mean or a vote (nor the average, which callers slice).
        """
        blocks = self.clip.visual.transformer.resblocks
        votes = avg = None
        if self.config.dmar and lengths is not None:
            real = torch.arange(x.shape[1] - 1, device=x.device) < torch.tensor(lengths, device=x.device)[:, None]
            real = real[:, :, None] & real[:, None, :]
            cells = torch.tensor([n * n for n in lengths], dtype=torch.float32, device=x.device)
        with self._autocast():
            for index, block in enumerate(blocks):
                x, attn = block_forward(block, x, mask, self_only=index == len(blocks) - 1)
                if not self.config.dmar:
                    continue
                layer = attn[:, 1:, 1:].float()
                if lengths is None:
                    above = layer > layer.mean(dim=(1, 2), keepdim=True)
                else:
                    mean = torch.where(real, layer, 0).sum(dim=(1, 2)) / cells
                    above = (layer > mean[:, None, None]) & real
                votes = above.to(torch.int16) if votes is None else votes + above
                if index in self.avg_layers:
                    avg = layer if avg is None else avg + layer
            tokens = project_tokens(self.clip.visual, x)[:, 1:]
        if not self.config.dmar:
            return self._class_probs(tokens), None, None
        return self._class_probs(tokens), votes, avg / len(self.avg_layers)

    @torch.inference_mode()
    def dense_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Patch probabilities ``B x N x C``, attention votes ``B x N x N`` and the averaged map
        for images of one size.

        Votes count the layers in which an attention entry is above that layer's mean; the
        averaged map is the mean over :attr:`avg_layers`. The class token is dropped.
        """
        grid = (images.shape[2] // self.clip.patch_size, images.shape[3] // self.clip.patch_size)
        with self._autocast():
            x = embed(self.clip.visual, images, self._round_pos(grid))
        return self._encode(x, None, None)

    @torch.inference_mode()
    def dense_forward_mixed(self, images: Sequence[torch.Tensor]
                            ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, list[torch.Tensor] | None]:
        """:meth:`dense_forward` for ``3 x H x W`` images of different sizes in one padded pass:
        per image ``N x C`` probabilities, ``N x N`` votes and averaged map over its own grid.

        Each image is embedded on its own (its own grid's positional table), its tokens first and
        zeros after them up to the longest sequence (so the padding depends on the token count
        only); a -inf key mask keeps the padding out of every real token's attention.
        """
        with self._autocast():
            x, mask, lengths = embed_padded(self.clip.visual, images, self._round_pos,
                                            activation_dtype(self.config.precision))
        probs, votes, avg = self._encode(x, mask, lengths if mask is not None else None)
        per_image = [probs[b, :n] for b, n in enumerate(lengths)]
        if votes is None:
            return per_image, None, None
        return per_image, [votes[b, :n, :n] for b, n in enumerate(lengths)], [avg[b, :n, :n] for b, n in enumerate(lengths)]

    def refine(self, probs: torch.Tensor, votes: torch.Tensor, avg: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """DMAR for one image: attention voting mask, then class-wise box masks (``N x C``).

        Each class column ``c`` of ``R0 = A @ P`` gives boxes (:func:`class_box_keys`, on the
        host, from one copy of ``R0``: no device round trip per class), and the column is
        recomputed with the keys outside them zeroed (:func:`boxed_columns`).
        """
        attn = avg * (votes >= self.config.vote_min_layers)
        refined = attn @ probs
        classes, keys = class_box_keys(refined.cpu(), grid)
        refined[:, classes] = boxed_columns(attn, probs[:, classes], keys.to(refined.device),
                                            one_product=refined.device.type != "cpu")
        return refined

    def cwr_crops(self, image: torch.Tensor, refined: torch.Tensor, local: torch.Tensor,
                  grid: tuple[int, int]) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
        """Classes to re-identify with their crops (``3 x S x S``, on the image's device) and token
        masks (``g x g``, on the host); ``refined`` and ``local`` are host tensors (:meth:`score`
        passes its copy).

        Candidates are the target classes whose local score is above the relative threshold of
        the whole refined matrix; the list stops at the first class whose box is empty. The
        choices are made in numpy, in float32 as the published torch code makes them (same bits),
        at a fraction of the per-call cost of small torch operations.
        """
        values, local = refined.numpy(), local.numpy()
        lo, hi = values.min(), values.max()
        threshold = lo + self.config.cwr_ratio * (hi - lo)  # float32, as with torch scalars
        patch = self.clip.patch_size
        side = self.clip.visual.grid_size[0]
        classes, crops, masks = [], [], []
        for c in np.flatnonzero(local[:self.num_targets] > threshold).tolist():
            column = values[:, c]
            with np.errstate(invalid="ignore", divide="ignore"):
                cells = ((column - column.min()) / (column.max() - column.min()) > 0.5).reshape(grid)
            rows, cols = np.flatnonzero(cells.any(axis=1)), np.flatnonzero(cells.any(axis=0))
            if rows.size == 0:
                break  # a constant column has no cell above 0.5: treated as an empty box
            y1, y2 = int(rows[0]), min(int(rows[-1]) + 1, grid[0] - 1)
            x1, x2 = int(cols[0]), min(int(cols[-1]) + 1, grid[1] - 1)
            if y2 <= y1 or x2 <= x1:
                break  # published behaviour: an empty box ends CWR for this image
            crop = image[:, y1 * patch:y2 * patch, x1 * patch:x2 * patch]
            crops.append(resize_bilinear(crop, (side * patch, side * patch)))
            cell_mask = torch.from_numpy(cells[y1:y2, x1:x2].astype(np.float32))[None, None]
            masks.append(F.interpolate(cell_mask, size=(side, side), mode="nearest")[0, 0])
            classes.append(c)
        return classes, crops, masks

    @torch.inference_mode()
    def masked_class_probs(self, crops: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Class probabilities of the class token when it may only attend inside each mask."""
        visual = self.clip.visual
        tokens = 1 + masks[0].numel()
        bias = torch.zeros(len(crops), 1, tokens, tokens, device=crops.device)
        bias[:, 0, 0, 1:] = (1 - masks.to(bias.device).flatten(1)) * -1000.0
        with self._autocast():
            x = embed(visual, crops)  # crops have the native size: the table is used as it is
            for block in visual.transformer.resblocks:
                x, _ = block_forward(block, x, mask=bias.to(x.dtype), need_probs=False,
                                     fused=self.config.attention == "fused")
            # every token through ln_post, the projection and the logits, as published, then the
            # class token's row: products of one row round differently from those of many
            tokens = project_tokens(visual, x)
        return self._class_probs(tokens)[:, 0]

    def score(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[ImageScores]:
        """Score preprocessed images: a ``B x 3 x H x W`` batch, or ``3 x H x W`` tensors whose
        sizes may differ (then one padded, masked pass: :meth:`dense_forward_mixed`; images of
        one size take the plain batched pass, without padding or mask).
        """
        batch = same_size_batch(images)
        if batch is not None:
            images = batch.to(self.clip.device)
            probs, votes, avg = self.dense_forward(images)
        else:
            images = [image.to(self.clip.device) for image in images]
            probs, votes, avg = self.dense_forward_mixed(images)
        patch = self.clip.patch_size
        results = []
        pending: list[tuple[int, list[int]]] = []
        all_crops, all_masks = [], []
        for b in range(len(images)):
            grid = (images[b].shape[1] // patch, images[b].shape[2] // patch)
            refined = self.refine(probs[b], votes[b], avg[b], grid) if self.config.dmar else probs[b]
            refined = refined.cpu()  # one copy serves the scores and CWR's per-class choices
            local = refined[:, :self.num_targets].max(dim=0).values
            results.append(ImageScores(scores=local.numpy().copy(), tags=[],
                                       local_scores=local.numpy(), refined=refined.numpy()))
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
def global_clip_scores(clip: LoadedClip, text: torch.Tensor, images: torch.Tensor | Sequence[torch.Tensor],
                       num_targets: int, precision: str = "fp32") -> np.ndarray:
    """Baseline: plain CLIP, class token of a 224-px view, softmax over the target classes.
    ``images``: as for :meth:`TagCLIP.score`; the image tower runs under ``precision``'s autocast,
    through this project's blocks rather than open_clip's ``encode_image`` (same result in fp32):
    on a CPU under bf16 autocast, torch 2.14.1's attention in the latter took 10x fp32's time."""
    side = clip.visual.grid_size[0] * clip.patch_size
    batch = same_size_batch(images)
    resized = [batch] if batch is not None else [image[None] for image in images]
    views = torch.cat([F.interpolate(x.to(clip.device), size=(side, side), mode="bicubic", align_corners=False)
                       for x in resized])
    with precision_autocast(precision, clip.device.type):
        feats = F.normalize(class_token_features(clip.visual, views).float(), dim=-1)
    logits = clip.model.logit_scale.exp() * feats @ text[:num_targets].float().to(clip.device).T
    return logits.softmax(dim=-1).cpu().numpy()
