"""deeplab-pytorch's learning-rate schedule as an mmengine parameter scheduler."""
from __future__ import annotations

from typing import Any

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmseg.registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class SteppedPolyLR(LRSchedulerMixin, _ParamScheduler):
    """Poly decay recomputed every ``step_size`` iterations, as deeplab-pytorch's
    ``libs/utils/lr_scheduler.py`` (``PolynomialLR``) does: after iteration ``t`` each group's lr
    is ``initial_lr * (1 - t' / iter_max) ** power`` with ``t'`` the last multiple of
    ``step_size`` up to ``t``, and stays there in between (mmengine's ``PolyLR`` changes it every
    iteration, towards ``end - 1``)."""

    def __init__(self, optimizer: Any, iter_max: int, power: float = 0.9, step_size: int = 10, **kwargs: Any):
        self.iter_max, self.power, self.step_size = iter_max, power, step_size
        super().__init__(optimizer, **kwargs)

    def _get_value(self) -> list[float]:
        """Each group's lr after ``last_step`` iterations."""
        done = min(self.last_step - self.last_step % self.step_size, self.iter_max)
        return [initial * (1 - done / self.iter_max) ** self.power for initial in self.base_values]
