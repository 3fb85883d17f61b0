"""DeepLabV2 head and the torch.load allowlist for mmengine checkpoints."""
import pickle

import pytest
import torch

from wsss.seg.heads import DeepLabV2Head
from wsss.seg.compat import allow_mmengine_checkpoints


def test_deeplabv2_head_sums_four_atrous_branches():
    head = DeepLabV2Head(in_channels=8, num_classes=5, dilations=(6, 12, 18, 24), dropout_ratio=0)
    head.init_weights()
    assert not hasattr(head, "conv_seg")
    assert [b.dilation for b in head.aspp] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert all(b.kernel_size == (3, 3) and b.padding == b.dilation for b in head.aspp)
    w = torch.cat([b.weight.flatten() for b in head.aspp])
    assert 0.005 < w.std().item() < 0.015  # DeepLab-v2's N(0, 0.01) init
    x = torch.randn(2, 8, 33, 33)
    out = head([x])
    assert out.shape == (2, 5, 33, 33)
    torch.testing.assert_close(out, sum(b(x) for b in head.aspp))


def test_head_rejects_multiple_inputs():
    with pytest.raises(ValueError, match="single input"):
        DeepLabV2Head(in_channels=[8, 16], in_index=[0, 1], input_transform="multiple_select",
                      channels=8, num_classes=3)


class _Foreign:
    pass


def test_allowlist_admits_mmengine_state_but_nothing_else(tmp_path, monkeypatch):
    from mmengine.logging import HistoryBuffer
    import numpy as np

    allow_mmengine_checkpoints()
    buf = HistoryBuffer()
    buf.update(1.5)
    good = tmp_path / "good.pth"
    torch.save({"message_hub": {"loss": buf, "arr": np.arange(3), "x": np.float64(2.0)}}, good)
    # a fresh process (e.g. tools/test_seg.py) has created no buffer yet
    monkeypatch.setattr(HistoryBuffer, "_statistics_methods", {})
    loaded = torch.load(good)  # default weights_only=True on torch >= 2.6
    assert loaded["message_hub"]["loss"].current() == 1.5
    bad = tmp_path / "bad.pth"
    torch.save({"x": _Foreign()}, bad)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bad)


def test_allowlisted_getattr_serves_only_history_buffer_statistics(tmp_path):
    allow_mmengine_checkpoints()
    path = tmp_path / "sneaky.pth"
    torch.save({"x": _GetattrPickle()}, path)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        torch.load(path)


class _GetattrPickle:
    """Pickles as getattr(collections.OrderedDict, 'fromkeys'): a lookup outside the allowlist."""

    def __reduce__(self):
        import collections
        return (getattr, (collections.OrderedDict, "fromkeys"))
