"""Fixes for running mmengine 0.10.7 on torch >= 2.6 and on CPU-only machines.

Nothing here edits installed packages; each fix is applied by the project at run time.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging.history_buffer import HistoryBuffer


def _history_buffer_method(owner: object, name: str) -> object:
    """Stands in for ``getattr`` while unpickling. mmengine pickles a ``HistoryBuffer``'s
    statistics methods by reference, i.e. as ``getattr(HistoryBuffer, 'mean')``; only those
    lookups are served, so allowing the pickled name ``builtins.getattr`` opens nothing else."""
    # the four built-in statistics are registered only when a first buffer is created
    if owner is HistoryBuffer and name in {"min", "max", "current", "mean",
                                           *HistoryBuffer._statistics_methods}:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed in a checkpoint")


def mmengine_checkpoint_globals() -> list:
    """What mmengine's own checkpoints pickle besides tensors: message-hub
    ``HistoryBuffer``s (numpy arrays, their statistics methods) and numpy scalars."""
    return [HistoryBuffer, (_history_buffer_method, "builtins.getattr"),
            np.core.multiarray._reconstruct, np.core.multiarray.scalar, np.ndarray, np.dtype,
            *(type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_))]


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load``'s default ``weights_only=True`` (torch >= 2.6) read mmengine
    checkpoints: mmengine calls ``torch.load`` without ``weights_only``, so loading or
    resuming its own checkpoints otherwise fails. Only these classes are allowed; the
    check stays on for everything else."""
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


def prepare_cpu_distributed(cfg: Config) -> None:
    """Make a ``torchrun`` launch (``launcher='pytorch'``) work without CUDA.

    mmengine's pytorch launcher calls ``torch.cuda.set_device`` and its DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``, both of which fail on CPU. So the process group is
    initialised here with gloo (mmengine then skips its own init) and DDP is built without
    device ids. A no-op with CUDA or without a distributed launcher.
    """
    if cfg.get("launcher", "none") != "pytorch" or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "gloo"
    wrapper = dict(type="MMDistributedDataParallel", broadcast_buffers=False,
                   find_unused_parameters=cfg.get("find_unused_parameters", False))
    wrapper.update(cfg.get("model_wrapper_cfg") or {})
    wrapper["device_ids"] = None
    cfg.model_wrapper_cfg = wrapper
