"""16-bit precisions on CPUs: refused without native support, a bf16 warning without AMX, fine on a GPU;
tf32 on a GPU only."""
import logging

import pytest
import torch

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.precision import (activation_dtype, autocast_dtype_name, bf16_is_slow, check_precision, precision_autocast,
                                           resolve_attention)

AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
AVX2_ONLY = frozenset({"avx", "avx2", "fma"})  # the AMD EPYC kind
AMX = AVX512_BF16 | {"amx_bf16", "amx_tile"}
CPU = "cpu"
SAPPHIRE_RAPIDS = AMX | {"avx512_fp16"}


def test_bf16_is_slow_only_on_cpus_without_amx():
    assert bf16_is_slow(CPU, AVX512_BF16)
    assert not bf16_is_slow(CPU, AMX)
    assert not bf16_is_slow("cuda", AVX512_BF16)
    assert not bf16_is_slow(CPU, frozenset())  # flags unknown: no claim


def test_bf16_without_native_support_is_refused_in_one_line():
    with pytest.raises(UserError, match="no native bf16") as exc:
        check_precision("bf16", CPU, AVX2_ONLY)
    assert "\n" not in str(exc.value) and "--precision fp32" in str(exc.value)
    check_precision("fp32", CPU, AVX2_ONLY)
    check_precision("bf16", "cuda", AVX2_ONLY)
    check_precision("bf16", CPU, AMX)
    check_precision("bf16", CPU, frozenset())  # flags unknown: no claim


def test_warning_names_the_faster_choice(caplog):
    with caplog.at_level(logging.WARNING, logger="tagclip_cls.runtime.precision"):
        check_precision("fp32", CPU, AVX512_BF16)
        check_precision("bf16", CPU, AMX)
        assert not caplog.records
        check_precision("bf16", CPU, AVX512_BF16)
    assert len(caplog.records) == 1 and "--precision fp32" in caplog.records[0].getMessage()


def test_fp16_needs_native_half_on_a_cpu():
    with pytest.raises(UserError, match="no native fp16"):
        check_precision("fp16", CPU, AMX)
    check_precision("fp16", CPU, SAPPHIRE_RAPIDS)
    check_precision("fp16", "cuda", AVX2_ONLY)


def test_every_stage_reads_precision_alike():
    assert [autocast_dtype_name(p) for p in ("fp32", "tf32", "bf16", "fp16")] == [None, None, "bfloat16", "float16"]
    assert [activation_dtype(p) for p in ("fp32", "tf32", "bf16", "fp16")] == [
        torch.float32, torch.float32, torch.bfloat16, torch.float16]
    with pytest.raises(UserError, match="choose one of fp32, tf32, bf16, fp16"):
        check_precision("half", CPU, AMX)


def test_tf32_is_float32_with_tf32_products_on_a_gpu_only():
    with pytest.raises(UserError, match="tf32: TensorFloat-32 is a GPU's") as exc:
        check_precision("tf32", CPU, SAPPHIRE_RAPIDS)
    assert "\n" not in str(exc.value)
    check_precision("tf32", "cuda", AVX2_ONLY)
    assert torch.get_float32_matmul_precision() == "highest"
    with precision_autocast("tf32", "cuda"):
        assert torch.get_float32_matmul_precision() == "high"  # TF32 for CUDA's float32 products
        assert not torch.is_autocast_enabled("cuda")  # and no cast: float32 tensors stay float32
    assert torch.get_float32_matmul_precision() == "highest"  # the caller's setting again
    torch.set_float32_matmul_precision("medium")
    try:
        with precision_autocast("tf32", "cuda"):
            pass
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    with precision_autocast("tf32", "cpu"):  # nothing changes for a CPU's products
        assert torch.get_float32_matmul_precision() == "highest"
        assert not torch.is_autocast_enabled("cpu")


def test_fused_attention_is_the_default_on_gpus_only():
    assert resolve_attention(None, "cpu") == "exact"
    assert resolve_attention(None, "cuda") == resolve_attention(None, "cuda:3") == "fused"
    assert resolve_attention("fused", "cpu") == "fused" and resolve_attention("exact", "cuda") == "exact"
    with pytest.raises(UserError, match="--attention must be one of exact, fused, not 'flash'"):
        resolve_attention("flash", "cpu")
