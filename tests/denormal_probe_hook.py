"""A test-only mmengine hook: during training and testing it multiplies float32 denormals on all
intra-op threads (an elementwise product and a matmul) and saves how many products stayed
nonzero to WORK_DIR/denormal_probe_{train,test}.json: 0 when denormals are flushed to zero."""
import json
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


DENORMAL_BITS = 0x000AE398  # float32 1e-39, as bits: converting 1e-39 on a flushing thread gives 0


def nonzero_denormal_products() -> int:
    """Nonzero results of denormal inputs; 1M elements and a 256^3 matmul split across threads."""
    x = torch.full((1024, 1024), DENORMAL_BITS, dtype=torch.int32).view(torch.float32)
    return int((x * 1.5).count_nonzero()) + int((x[:256, :256] @ torch.eye(256)).count_nonzero())


@HOOKS.register_module()
class DenormalProbe(Hook):
    def __init__(self) -> None:
        self.nonzero = {"train": 0, "test": 0}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.nonzero["train"] += nonzero_denormal_products()

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.nonzero["test"] += nonzero_denormal_products()

    def after_train(self, runner) -> None:
        self._save(runner, "train")

    def after_test(self, runner) -> None:
        self._save(runner, "test")

    def _save(self, runner, stage: str) -> None:
        (Path(runner.work_dir) / f"denormal_probe_{stage}.json").write_text(
            json.dumps({"nonzero": self.nonzero[stage], "threads": torch.get_num_threads()}))
