"""A test-only mmengine hook: every rank saves its own model weights after training, so a test
can check that DDP kept the ranks identical (mmengine's checkpoints come from rank 0 only)."""
from pathlib import Path

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankWeights(Hook):
    def after_train(self, runner) -> None:
        model = getattr(runner.model, "module", runner.model)
        torch.save({"parameters": {k: v.detach() for k, v in model.named_parameters()}, "state": model.state_dict()},
                   Path(runner.work_dir) / f"rank{get_rank()}_weights.pth")
