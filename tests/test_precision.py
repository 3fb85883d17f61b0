"""The bf16-on-CPU warning: slow without AMX, fine with it or on a GPU."""
import logging

import torch

from tagclip_cls.runtime.precision import bf16_is_slow, warn_if_slow

AVX512_BF16 = frozenset({"avx512f", "avx512_bf16"})


def test_bf16_is_slow_only_on_cpus_without_amx():
    assert bf16_is_slow(torch.device("cpu"), AVX512_BF16)
    assert not bf16_is_slow(torch.device("cpu"), AVX512_BF16 | {"amx_bf16", "amx_tile"})
    assert not bf16_is_slow(torch.device("cuda"), AVX512_BF16)
    assert not bf16_is_slow(torch.device("cpu"), frozenset())  # flags unknown: no claim


def test_warning_names_the_faster_choice(monkeypatch, caplog):
    monkeypatch.setattr("tagclip_cls.runtime.precision.cpu_flags", lambda: AVX512_BF16)
    with caplog.at_level(logging.WARNING, logger="tagclip_cls.runtime.precision"):
        warn_if_slow("fp32", torch.device("cpu"))
        assert not caplog.records
        warn_if_slow("bf16", torch.device("cpu"))
    assert len(caplog.records) == 1 and "--precision fp32" in caplog.records[0].getMessage()
