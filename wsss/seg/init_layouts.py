"""ResNet checkpoints in the layouts stage 3 is initialised from, renamed to mmseg's ResNet keys.

* ``deeplab-pytorch``: the caffemodels converted by deeplab-pytorch's ``convert.py``
  (``deeplabv1_resnet101-coco.pth``, ``deeplabv2_resnet101_msc-vocaug.pth`` with a ``base.``
  prefix) and models saved in its layout (the ImageNet model CLIP-ES points to):
  ``layer1.conv1.{conv,bn}`` is the stem, ``layer{2..5}.block{n}.{reduce,conv3x3,increase,shortcut}
  .{conv,bn}`` the bottlenecks.
* ``torchvision``: ``conv1``, ``bn1``, ``layer{1..4}.{i}.{conv,bn}{1..3}``, ``downsample.{0,1}``,
  which mmseg's ResNet shares.
* ``mmseg``: a whole segmentor's checkpoint; its ``backbone.`` entries.

Head entries (``aspp``, ``fc``, ``decode_head``) are left out: only the backbone is initialised.
"""
from __future__ import annotations

import re

import torch

LAYOUTS = ("deeplab-pytorch", "torchvision", "mmseg")
_DEEPLAB_CONV = {"reduce": "1", "conv3x3": "2", "increase": "3"}
_DEEPLAB_STEM = re.compile(r"layer1\.conv1\.(conv|bn)\.(\w+)")
_DEEPLAB_BLOCK = re.compile(r"layer([2-5])\.block(\d+)\.(reduce|conv3x3|increase|shortcut)\.(conv|bn)\.(\w+)")
_TORCHVISION_KEY = re.compile(r"(conv1|bn1|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01]))\.\w+")


def _deeplab_key(key: str) -> str | None:
    key = key.removeprefix("base.")
    if stem := _DEEPLAB_STEM.fullmatch(key):
        return f"{'conv1' if stem[1] == 'conv' else 'bn1'}.{stem[2]}"
    if block := _DEEPLAB_BLOCK.fullmatch(key):
        layer, index, unit, kind, name = block.groups()
        prefix = f"layer{int(layer) - 1}.{int(index) - 1}"
        if unit == "shortcut":
            return f"{prefix}.downsample.{0 if kind == 'conv' else 1}.{name}"
        return f"{prefix}.{kind}{_DEEPLAB_CONV[unit]}.{name}"
    return None


def _torchvision_key(key: str) -> str | None:
    return key if _TORCHVISION_KEY.fullmatch(key) else None


def _mmseg_key(key: str) -> str | None:
    return key.removeprefix("backbone.") if key.startswith("backbone.") else None


_RENAME = {"deeplab-pytorch": _deeplab_key, "torchvision": _torchvision_key, "mmseg": _mmseg_key}


def detect_layout(state: dict[str, torch.Tensor]) -> str | None:
    """The layout of :data:`LAYOUTS` that names most of ``state``'s keys; ``None`` if none does."""
    counts = {layout: sum(rename(key) is not None for key in state) for layout, rename in _RENAME.items()}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def to_mmseg_resnet(state: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """``state``'s backbone entries under mmseg's ResNet names (others are dropped)."""
    rename = _RENAME[layout]
    renamed = {}
    for key, value in state.items():
        new = rename(key)
        if new is not None:
            renamed[new] = value
    return renamed
