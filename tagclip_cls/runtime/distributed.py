"""Sharding work across ``torchrun`` ranks (processes and machines) without changing results.

Work is cut into units (batches of images) the same way whatever the number of ranks, and rank
``r`` of ``W`` takes units ``r, r + W, ...``: every image is computed in the same company, so a
sharded run writes exactly what a single process writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_info() -> RankInfo:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 when not launched by it)."""
    env = os.environ
    return RankInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def shard(units: Sequence[T], info: RankInfo) -> list[T]:
    return list(units[info.rank::info.world_size])


def device_for_rank(device: str, info: RankInfo) -> torch.device:
    """``cuda`` becomes this rank's own GPU (``cuda:LOCAL_RANK``); other devices pass through."""
    if device == "cuda" and torch.cuda.device_count() > 1:
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device(device)


def wait_for_all(info: RankInfo, timeout_hours: float = 48.0) -> None:
    """Barrier over all ranks (gloo, works on CPU-only machines); no-op for a single process."""
    if info.world_size == 1:
        return
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(hours=timeout_hours))
    dist.barrier()
