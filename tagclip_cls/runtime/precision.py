"""Whether a reduced precision can pay off on the device at hand."""
from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import torch

from tagclip_cls.runtime.errors import UserError

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


def native_bf16(flags: frozenset[str]) -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512_BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def bf16_is_slow(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """True for a Linux CPU without AMX: its bfloat16 matrix products run slower than float32 ones
    (measured on a 2-core AVX512-BF16 Xeon: 130-146 GFLOP/s against 219-245)."""
    flags = cpu_flags() if flags is None else flags
    return device.type == "cpu" and bool(flags) and "amx_bf16" not in flags


def check_precision(precision: str, device: torch.device, flags: frozenset[str] | None = None) -> None:
    """Refuse bf16 on a CPU without native bfloat16, where it is emulated (about 10x slower than
    fp32, measured on an AVX2-only AMD EPYC); warn where it is native but slower (no AMX)."""
    if precision != "bf16" or device.type != "cpu":
        return
    flags = cpu_flags() if flags is None else flags
    if flags and not native_bf16(flags):
        raise UserError("--precision bf16: this CPU has no native bfloat16 (neither AVX512_BF16 nor AMX), "
                        "so it would run about 10 times slower than fp32; use --precision fp32 here")
    if bf16_is_slow(device, flags):
        log.warning("bf16 on this CPU (no AMX) is slower than fp32 and less exact; "
                    "use it on a GPU or an AMX CPU, --precision fp32 here")
