"""mmengine validation and test loops that predict with a :mod:`wsss.seg.protocol` test protocol.

Configs name them as ``val_cfg = dict(type='ProtocolValLoop', protocol='published')`` and
``test_cfg = dict(type='ProtocolTestLoop', protocol=...)``; training's validation and
``tools/test_seg.py`` then predict the same way. Each data sample gets the protocol's last
variant as ``pred_sem_seg`` (what hooks and exports see) and every variant's labels in
``variant_labels``, which :class:`~wsss.seg.metric.WSSSIoUMetric` scores one by one.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop
from mmengine.runner.amp import autocast
from mmengine.structures import PixelData
from mmseg.registry import LOOPS

from wsss.seg.protocol import TestProtocol, get_protocol, predict_variants


def predict_batch(model: Any, data_batch: dict, protocol: TestProtocol, fp16: bool = False) -> list:
    """The data samples of ``data_batch`` with the protocol's predictions (see the module doc)."""
    module = model.module if is_model_wrapper(model) else model
    with autocast(enabled=fp16):
        data = module.data_preprocessor(data_batch, False)
        samples = data["data_samples"]
        for i, sample in enumerate(samples):
            h, w = sample.img_shape[:2]
            raw = data_batch["inputs"][i][:, :h, :w]  # uint8 BGR as loaded, before padding
            image = raw.flip(0).permute(1, 2, 0).cpu().numpy() if protocol.crf is not None else None  # the CRF's
            labels = predict_variants(module, data["inputs"][i:i + 1, :, :h, :w], protocol,
                                      tuple(sample.ori_shape[:2]), image)
            sample.variant_labels = labels
            sample.pred_sem_seg = PixelData(data=list(labels.values())[-1][None])
    return samples


class _ProtocolIter:
    """mmengine's loops, taking a ``protocol`` name, with :func:`predict_batch` in place of the
    model's step."""

    runner: Any
    evaluator: Any
    fp16: bool
    stage: str

    def __init__(self, runner: Any, dataloader: Any, evaluator: Any, fp16: bool = False,
                 protocol: str = "single") -> None:
        super().__init__(runner, dataloader, evaluator, fp16)  # type: ignore[call-arg]
        self.protocol: TestProtocol = get_protocol(protocol)

    @torch.no_grad()
    def run_iter(self, idx: int, data_batch: Sequence[dict]) -> None:
        """Predict one batch by the protocol and pass it to the evaluator, between the hooks."""
        self.runner.call_hook(f"before_{self.stage}_iter", batch_idx=idx, data_batch=data_batch)
        outputs = predict_batch(self.runner.model, data_batch, self.protocol, self.fp16)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(f"after_{self.stage}_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)


@LOOPS.register_module()
class ProtocolValLoop(_ProtocolIter, ValLoop):
    """mmengine's ``ValLoop`` predicting by the test protocol named ``protocol``."""

    stage = "val"


@LOOPS.register_module()
class ProtocolTestLoop(_ProtocolIter, TestLoop):
    """mmengine's ``TestLoop`` predicting by the test protocol named ``protocol``."""

    stage = "test"
