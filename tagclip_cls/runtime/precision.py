"""The ``--precision`` and ``--attention`` choices every stage shares, and whether one can pay off on a device.

``fp32`` computes in float32 (the published numbers); ``tf32`` too, but lets a GPU's float32
matrix products run on its tensor cores in TensorFloat-32 (inputs rounded to 10 mantissa bits,
as fp16's, with float32's range; NVIDIA Ampere and later, a GPU only); ``bf16`` and ``fp16`` run
the model under autocast to bfloat16 or float16, on a GPU and on a CPU alike. Nothing here
imports torch at module level, so a tool checks the choice before torch loads.
"""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from tagclip_cls.runtime.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
# attention where nobody reads its weights: "exact" (explicit softmax, the published arithmetic)
# or "fused" (scaled_dot_product_attention: flash/memory-efficient kernels, other rounding)
ATTENTION_MODES = ("exact", "fused")
NATIVE_FLAGS = {"bf16": {"avx512_bf16", "amx_bf16"}, "fp16": {"avx512_fp16", "amx_fp16"}}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def resolve_attention(requested: str | None, device: str) -> str:
    """The ``--attention`` mode to run on ``device``: ``requested``, checked, or for ``None``
    ``fused`` on a GPU, where the flash kernels pay, and ``exact`` on a CPU, whose fp32 results
    then keep the published code's bits."""
    if requested is None:
        return "exact" if device.split(":")[0] == "cpu" else "fused"
    if requested not in ATTENTION_MODES:
        raise UserError(f"--attention must be one of {', '.join(ATTENTION_MODES)}, not {requested!r}")
    return requested


def autocast_dtype_name(precision: str) -> str | None:
    """The torch dtype name autocast uses for ``precision`` (None: no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"fp32": None, "tf32": None, "bf16": "bfloat16", "fp16": "float16"}[precision]


def activation_dtype(precision: str):
    """The torch dtype the model's attention logits have under ``precision``: autocast's, else
    float32 (an additive mask of this dtype leaves the softmax's precision as it is)."""
    import torch

    return getattr(torch, autocast_dtype_name(precision) or "float32")


def precision_autocast(precision: str, device_type: str) -> AbstractContextManager:
    """The context both stages run their model under: autocast for ``bf16``/``fp16``, TF32
    matrix products on a GPU for ``tf32`` (float32 on a CPU), nothing for ``fp32``."""
    if precision == "tf32":
        return tf32_matmuls() if device_type == "cuda" else nullcontext()
    dtype_name = autocast_dtype_name(precision)
    if dtype_name is None:
        return nullcontext()
    import torch  # here, so that choosing a precision does not load torch

    return torch.autocast(device_type, dtype=getattr(torch, dtype_name))


@contextmanager
def tf32_matmuls() -> Iterator[None]:
    """float32 matrix products in TensorFloat-32 on CUDA (``torch.set_float32_matmul_precision("high")``)
    inside the block; the caller's setting afterwards."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def bf16_is_slow(device_type: str, flags: frozenset[str] | None = None) -> bool:
    """True for a Linux CPU without AMX: its bfloat16 matrix products run slower than float32 ones
    (measured on a 2-core AVX512-BF16 Xeon: 130-146 GFLOP/s against 219-245)."""
    flags = cpu_flags() if flags is None else flags
    return device_type == "cpu" and bool(flags) and "amx_bf16" not in flags


def check_precision(precision: str, device_type: str, flags: frozenset[str] | None = None) -> None:
    """Refuse an unknown precision, ``tf32`` on a CPU (it would silently be fp32), and a 16-bit
    one on a CPU that only emulates it (bf16 ran about 10x slower than fp32 on an AVX2-only AMD
    EPYC); warn where bf16 is native but slower than fp32 (no AMX)."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or device_type != "cpu":
        return
    if precision == "tf32":
        raise UserError("--precision tf32: TensorFloat-32 is a GPU's (NVIDIA Ampere or later); "
                        "on a CPU use fp32, or bf16 where the CPU has AMX")
    flags = cpu_flags() if flags is None else flags
    if flags and not NATIVE_FLAGS[precision] & flags:
        raise UserError(f"--precision {precision}: this CPU has no native {precision} "
                        f"({' or '.join(sorted(NATIVE_FLAGS[precision]))}), so it would run many times "
                        f"slower than fp32; use --precision fp32 here")
    if precision == "bf16" and bf16_is_slow(device_type, flags):
        log.warning("bf16 on this CPU (no AMX) is slower than fp32 and less exact; "
                    "use it on a GPU or an AMX CPU, --precision fp32 here")
