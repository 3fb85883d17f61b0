"""bf16 on CPUs: refused without native bfloat16, a warning without AMX, fine with it or on a GPU."""
import logging

import pytest
import torch

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.precision import bf16_is_slow, check_precision

AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})
AVX2_ONLY = frozenset({"avx", "avx2", "fma"})  # the AMD EPYC kind
AMX = AVX512_BF16 | {"amx_bf16", "amx_tile"}
CPU = torch.device("cpu")


def test_bf16_is_slow_only_on_cpus_without_amx():
    assert bf16_is_slow(CPU, AVX512_BF16)
    assert not bf16_is_slow(CPU, AMX)
    assert not bf16_is_slow(torch.device("cuda"), AVX512_BF16)
    assert not bf16_is_slow(CPU, frozenset())  # flags unknown: no claim


def test_bf16_without_native_support_is_refused_in_one_line():
    with pytest.raises(UserError, match="no native bfloat16") as exc:
        check_precision("bf16", CPU, AVX2_ONLY)
    assert "\n" not in str(exc.value) and "--precision fp32" in str(exc.value)
    check_precision("fp32", CPU, AVX2_ONLY)
    check_precision("bf16", torch.device("cuda"), AVX2_ONLY)
    check_precision("bf16", CPU, AMX)
    check_precision("bf16", CPU, frozenset())  # flags unknown: no claim


def test_warning_names_the_faster_choice(caplog):
    with caplog.at_level(logging.WARNING, logger="tagclip_cls.runtime.precision"):
        check_precision("fp32", CPU, AVX512_BF16)
        check_precision("bf16", CPU, AMX)
        assert not caplog.records
        check_precision("bf16", CPU, AVX512_BF16)
    assert len(caplog.records) == 1 and "--precision fp32" in caplog.records[0].getMessage()
