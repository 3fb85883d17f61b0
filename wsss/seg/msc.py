"""DeepLab-v2's multi-scale inputs (deeplab-pytorch ``libs/models/msc.py`` and ``main.py``):
the network runs on the batch at each scale, the logits are fused by a pixel-wise max at the
first scale's logit size, and training puts one loss on every scale's logits and one on the
fused logits, each against the labels resized to that logit size."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor, nn

from wsss.seg.scale_choice import nearest_label


def resize_labels(labels: Tensor, size: Sequence[int]) -> Tensor:
    """``N x H x W`` integer labels resized to ``size`` as deeplab-pytorch's ``main.py`` does
    (:func:`~wsss.seg.scale_choice.nearest_label`, on the CPU)."""
    resized = [nearest_label(label, tuple(size)) for label in labels.cpu().numpy()]
    return torch.from_numpy(np.stack(resized)).long().to(labels.device)


def scaled_logits(model: EncoderDecoder, inputs: Tensor, scale: float) -> Tensor:
    """The decode head's logits (at its output stride) of ``inputs`` (``N x 3 x H x W``,
    normalised) resized by ``scale`` (bilinear, corners not aligned)."""
    if scale != 1.0:
        inputs = F.interpolate(inputs, scale_factor=scale, mode="bilinear", align_corners=False)
    return model.decode_head.forward(model.extract_feat(inputs))


def fuse_max(logits: Sequence[Tensor]) -> Tensor:
    """Element-wise maximum of ``N x C x h x w`` logit maps, each resized (bilinear, corners not
    aligned) to the size of the first one."""
    size = logits[0].shape[-2:]
    return torch.stack([logits[0], *(F.interpolate(x, size=size, mode="bilinear", align_corners=False)
                                      for x in logits[1:])]).amax(0)


@MODELS.register_module()
class MSCEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` on multi-scale inputs; ``predict`` returns the fused logits'
    labels (at the input size, as mmseg does), i.e. deeplab-pytorch's test-time forward.

    Args:
        scales: input scales; the first sets the size at which logits are fused
            (DeepLab-v2: 1, 0.75, 0.5).
        **kwargs: as for ``EncoderDecoder`` (no auxiliary head).
    """

    def __init__(self, scales: Sequence[float] = (1.0, 0.75, 0.5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.with_auxiliary_head:
            raise ValueError("MSCEncoderDecoder has no auxiliary head")
        self.scales = tuple(float(s) for s in scales)

    def scale_logits(self, inputs: Tensor) -> list[Tensor]:
        """The decode head's logits for ``inputs`` resized (bilinearly) by each scale."""
        return [scaled_logits(self, inputs, s) for s in self.scales]

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """The fused logits, resized to the input (as mmseg's ``encode_decode``)."""
        return self.decode_head.predict_by_feat(fuse_max(self.scale_logits(inputs)), batch_img_metas)

    def loss(self, inputs: Tensor, data_samples: list) -> dict[str, Tensor]:
        """One loss per scale (``loss_x1.0`` ...) and one on the fused logits (``loss_max``);
        mmengine sums every ``loss`` entry, as deeplab-pytorch sums them."""
        logits = self.scale_logits(inputs)
        outputs = {f"loss_x{s}": x for s, x in zip(self.scales, logits)}
        outputs["loss_max"] = fuse_max(logits)
        labels = torch.stack([sample.gt_sem_seg.data[0] for sample in data_samples])
        criteria = self.decode_head.loss_decode
        criteria = criteria if isinstance(criteria, nn.ModuleList) else [criteria]
        ignore = self.decode_head.ignore_index
        targets: dict[tuple[int, ...], Tensor] = {}  # the fused logits share the first scale's size
        losses = {}
        for name, logit in outputs.items():
            size = tuple(logit.shape[2:])
            if size not in targets:
                targets[size] = resize_labels(labels, size)
            losses[name] = sum(criterion(logit, targets[size], ignore_index=ignore) for criterion in criteria)
        return losses
