"""DeepLab-v2 decode head, which mmseg 1.x does not ship."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


@MODELS.register_module()
class DeepLabV2Head(BaseDecodeHead):
    """Atrous spatial pyramid pooling of DeepLab-v2 (Chen et al., TPAMI 2017).

    Each branch is one 3x3 convolution with its own dilation rate that maps the backbone
    feature straight to class scores; the branch outputs are summed. There is no
    bottleneck, so ``channels`` is unused and the base class's ``conv_seg`` is removed.

    Args:
        dilations: one branch per rate; DeepLab-v2 uses (6, 12, 18, 24).
        **kwargs: as for ``BaseDecodeHead`` (``channels`` defaults to ``in_channels``).
    """

    def __init__(self, dilations: Sequence[int] = (6, 12, 18, 24), **kwargs: Any) -> None:
        kwargs.setdefault("channels", kwargs.get("in_channels"))
        kwargs.setdefault("init_cfg", dict(type="Normal", std=0.01, override=dict(name="aspp")))
        super().__init__(**kwargs)
        if not isinstance(self.in_channels, int):
            raise ValueError("DeepLabV2Head takes a single input feature (in_channels: int)")
        del self.conv_seg
        self.dilations = tuple(dilations)
        self.aspp = nn.ModuleList(
            nn.Conv2d(self.in_channels, self.out_channels, 3, padding=d, dilation=d)
            for d in self.dilations)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        """Sum of the atrous branches' class scores (at the feature's resolution)."""
        x = self._transform_inputs(inputs)
        if self.dropout is not None:
            x = self.dropout(x)
        return torch.stack([branch(x) for branch in self.aspp]).sum(0)
