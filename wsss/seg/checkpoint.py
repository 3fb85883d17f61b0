"""Stage 3 evaluates only a network it loaded whole.

mmengine loads ``load_from`` and mmseg's ``init_model`` its checkpoint non-strictly: a checkpoint
whose keys match nothing leaves the network as initialised, and its mIoU looks like a result.
Here a checkpoint is read as data (:func:`~tagclip_cls.core.checkpoint_file.load_weights_only`:
a truncated or foreign file is one :class:`UserError`) and refused unless it sets every weight of
the model: every parameter and buffer, at its shape (BatchNorm's ``num_batches_tracked`` counters
excepted, which evaluation never reads). Keys the model lacks (an auxiliary head) are ignored.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from tagclip_cls.core.checkpoint_file import load_weights_only, state_dict_of
from tagclip_cls.runtime.errors import UserError

UNUSED_IN_EVALUATION = "num_batches_tracked"
SHOWN_KEYS = 3


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at ``path`` (a dict holding a state dict, or the state dict itself), read as data."""
    checkpoint = load_weights_only(path)
    state_dict_of(checkpoint, path)  # refused now when it holds no tensors
    return checkpoint


def unloaded_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """The model's weights that ``state`` leaves unset: absent, or of another shape."""
    return [name for name, value in model.state_dict().items()
            if not name.endswith(UNUSED_IN_EVALUATION)
            and (name not in state or tuple(state[name].shape) != tuple(value.shape))]


def load_whole(model: torch.nn.Module, checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Copy ``checkpoint``'s weights into ``model``; refused, before any is copied, unless they
    set every weight (see the module doc)."""
    state = state_dict_of(checkpoint, path)
    missing = unloaded_weights(model, state)
    if missing:
        total = sum(1 for name in model.state_dict() if not name.endswith(UNUSED_IN_EVALUATION))
        raise UserError(f"{path}: {len(missing)} of the model's {total} weights are missing from it or of "
                        f"another shape (first: {', '.join(missing[:SHOWN_KEYS])}); is it a checkpoint of "
                        "this config?")
    model.load_state_dict(state, strict=False)
