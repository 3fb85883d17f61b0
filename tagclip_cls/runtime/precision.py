"""Whether a reduced precision can pay off on the device at hand."""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_is_slow(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """True for a Linux CPU without AMX: its bfloat16 matrix products run slower than float32 ones
    (measured on a 2-core AVX512-BF16 Xeon: 130-146 GFLOP/s against 219-245)."""
    flags = cpu_flags() if flags is None else flags
    return device.type == "cpu" and bool(flags) and "amx_bf16" not in flags


def warn_if_slow(precision: str, device: torch.device) -> None:
    """Log a warning when ``precision`` is bf16 on a CPU where it costs time instead of saving it."""
    if precision == "bf16" and bf16_is_slow(device):
        log.warning("bf16 on this CPU (no AMX) is slower than fp32 and less exact; "
                    "use it on a GPU or an AMX CPU, --precision fp32 here")
