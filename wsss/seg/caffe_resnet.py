"""The ResNet of the Caffe DeepLab models (deeplab-pytorch ``libs/models/resnet.py``): each stage's
stride sits in the block's first 1x1 convolution and the stem's 3x3 max pool rounds its output
size up. mmseg's ``ResNet(style='caffe')`` already places the stride; only the pool differs."""
from __future__ import annotations

from typing import Any

from mmseg.models.backbones import ResNet
from mmseg.registry import MODELS
from torch import nn


@MODELS.register_module()
class CaffeResNet(ResNet):
    """mmseg's ResNet with ``style='caffe'`` and a ceil-mode stem pool (kernel 3, stride 2,
    padding 1), so that a 320-pixel side gives 81 feature rows as in Caffe, not 80.

    Args:
        **kwargs: as for mmseg's ``ResNet``; ``style`` is always ``'caffe'``.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.setdefault("style", "caffe") != "caffe":
            raise ValueError("CaffeResNet is style='caffe' by definition")
        super().__init__(**kwargs)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
