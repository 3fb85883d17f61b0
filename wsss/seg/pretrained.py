"""Backbone initialisation that loads every weight or refuses.

mmengine's ``Pretrained`` init loads what matches the model's names and logs a warning for
the rest, so a checkpoint in another key layout (deeplab-pytorch's Caffe conversions) leaves
the backbone random without stopping. ``StrictPretrained`` converts the file's layout
(:mod:`wsss.seg.init_layouts`) and raises a one-line :class:`UserError` unless it sets every
weight of the backbone at its shape (:func:`~wsss.seg.checkpoint.unloaded_weights`)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from mmengine.model.weight_init import update_init_info
from mmseg.registry import WEIGHT_INITIALIZERS

from tagclip_cls.core.checkpoint_file import load_weights_only, state_dict_of
from tagclip_cls.runtime.errors import UserError
from wsss.seg.checkpoint import SHOWN_KEYS, unloaded_weights
from wsss.seg.init_layouts import LAYOUTS, detect_layout, to_mmseg_resnet

TORCHVISION_SCHEME = "torchvision://"


def resolve_checkpoint(checkpoint: str) -> Path:
    """The local file of ``checkpoint``: a path, or ``torchvision://NAME`` (torchvision's
    ImageNet weights, downloaded once into torch's hub cache as mmengine does)."""
    if not checkpoint.startswith(TORCHVISION_SCHEME):
        return Path(checkpoint)
    from mmengine.runner.checkpoint import get_torchvision_models

    name = checkpoint[len(TORCHVISION_SCHEME):]
    url = get_torchvision_models().get(name)
    if url is None:
        raise UserError(f"{checkpoint}: torchvision has no model named {name!r}")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached))
    return cached


def read_state(checkpoint: str | os.PathLike) -> tuple[Path, dict[str, torch.Tensor]]:
    """The local path of ``checkpoint`` (see :func:`resolve_checkpoint`) and its state dict, read as data."""
    path = resolve_checkpoint(str(checkpoint))
    if not path.is_file():
        raise UserError(f"{path}: pretrained checkpoint not found")
    return path, state_dict_of(load_weights_only(path), path)


def load_backbone_state(backbone: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
                        layout: str | None = None) -> str:
    """Set every weight of ``backbone`` (an mmseg ResNet) from ``state`` (read from ``path``) in
    ``layout`` (one of :data:`~wsss.seg.init_layouts.LAYOUTS`; found from the keys when ``None``);
    returns the layout. Refused, before anything is copied, unless all weights are set."""
    layout = layout or detect_layout(state)
    if layout not in LAYOUTS:
        raise UserError(f"{path}: not a ResNet checkpoint in a known layout ({', '.join(LAYOUTS)}); "
                        f"first keys: {', '.join(list(state)[:SHOWN_KEYS])}")
    converted = to_mmseg_resnet(state, layout)
    missing = unloaded_weights(backbone, converted)
    if missing:
        raise UserError(f"{path}: as a {layout} checkpoint it leaves {len(missing)} backbone weights unset "
                        f"or of another shape (first: {', '.join(missing[:SHOWN_KEYS])})")
    backbone.load_state_dict(converted, strict=False)  # every weight is set (checked above); extra keys ignored
    return layout


@WEIGHT_INITIALIZERS.register_module()
class StrictPretrained:
    """``init_cfg=dict(type='StrictPretrained', checkpoint=PATH, layout=None)`` on a ResNet
    backbone: :func:`load_backbone_state`, where mmengine's ``Pretrained`` would load what matches.

    Args:
        checkpoint: a file, or ``torchvision://resnet101``.
        layout: ``deeplab-pytorch``, ``torchvision`` or ``mmseg``; ``None`` to detect it.
    """

    def __init__(self, checkpoint: str, layout: str | None = None) -> None:
        if layout is not None and layout not in LAYOUTS:
            raise UserError(f"StrictPretrained: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.checkpoint = checkpoint
        self.layout = layout

    def __call__(self, module: torch.nn.Module) -> None:
        path, state = read_state(self.checkpoint)
        layout = load_backbone_state(module, state, path, self.layout)
        if hasattr(module, "_params_init_info"):  # mmengine's record of what set each weight
            update_init_info(module, init_info=f"StrictPretrained: {layout} checkpoint {self.checkpoint}")
