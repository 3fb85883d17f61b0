"""Library side of ``tools/train_seg.py`` and ``tools/test_seg.py``: build the mmengine
config from the command line's options, then train or evaluate with mmengine's Runner."""
from __future__ import annotations

import logging
import os
import os.path as osp
from pathlib import Path
from typing import Any, Callable

import torch
from mmengine.config import Config, ConfigDict
from mmengine.device import get_device
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from tagclip_cls.core.checkpoint_file import state_dict_of
from tagclip_cls.runtime.denormals import flush_denormals
from tagclip_cls.runtime.ids import inside_root
from wsss.seg import register  # noqa: F401  (mmseg modules of this project)
from wsss.seg.checkpoint import load_whole, read_checkpoint
from wsss.seg.compat import prepare_cpu_distributed
from wsss.seg.errors import MissingFileError
from wsss.seg.init_layouts import detect_layout
from wsss.seg.pretrained import load_backbone_state

DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")
#: what ``train_seg.py --amp`` sets: bf16 mixed precision through mmengine's AmpOptimWrapper
AMP_OPTIONS = {"optim_wrapper.type": "AmpOptimWrapper", "optim_wrapper.dtype": "bfloat16"}


def default_launcher() -> str:
    """``pytorch`` when started by ``torchrun`` (which sets ``RANK``), else ``none``."""
    return "pytorch" if "RANK" in os.environ and "LOCAL_RANK" in os.environ else "none"


def _leaf_datasets(ds: ConfigDict) -> list[ConfigDict]:
    """The actual datasets inside a dataset config, looking through wrappers."""
    if "datasets" in ds:
        return [leaf for sub in ds["datasets"] for leaf in _leaf_datasets(sub)]
    if "dataset" in ds:
        return _leaf_datasets(ds["dataset"])
    return [ds]


def _for_datasets(cfg: Config, loaders: tuple[str, ...], fn: Callable[[ConfigDict], None]) -> None:
    for name in loaders:
        if cfg.get(name):
            for ds in _leaf_datasets(cfg[name]["dataset"]):
                fn(ds)


def load_config(config: str | os.PathLike, *, pseudo_masks: str | None = None,
                data_root: str | None = None, work_dir: str | None = None,
                cfg_options: dict[str, Any] | None = None, resume: bool = False,
                launcher: str = "none") -> Config:
    """Read ``config`` and apply the command-line options to it.

    ``pseudo_masks`` becomes the training datasets' ``pseudo_mask_dir``; ``data_root``
    replaces every dataset's root; ``cfg_options`` (``key.sub=value`` pairs) are merged
    last so they can override anything. Raises ``SegUserError`` for missing paths.
    """
    if not osp.isfile(config):
        raise MissingFileError(f"{config}: config file not found")
    cfg = Config.fromfile(str(config))
    if data_root is not None:
        if not osp.isdir(data_root):
            raise MissingFileError(f"{data_root}: data root not found")
        root = osp.abspath(data_root)
        _for_datasets(cfg, DATALOADERS, lambda ds: ds.__setitem__("data_root", root))
    if pseudo_masks is not None:
        if not osp.isdir(pseudo_masks):
            raise MissingFileError(f"{pseudo_masks}: pseudo-mask folder not found")
        masks = osp.abspath(pseudo_masks)
        _for_datasets(cfg, ("train_dataloader",),
                      lambda ds: ds.__setitem__("pseudo_mask_dir", masks))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir or cfg.get("work_dir") or osp.join(
        "work_dirs", osp.splitext(osp.basename(config))[0])
    cfg.launcher = launcher
    cfg.resume = resume
    if resume and not cfg.get("load_from") and not osp.isfile(
            osp.join(cfg.work_dir, "last_checkpoint")):
        raise MissingFileError(f"{cfg.work_dir}: --resume given but this work dir has no "
                               "checkpoint (last_checkpoint) to resume from")
    return cfg


HOOK_TABLE = "Hooks will be executed in the following order:"


class SetupDumpFilter(logging.Filter):
    """Passes all records but mmengine's set-up dumps: the system/runtime environment and the
    config (both logged by ``Runner._log_env``) and the hook order table, about 350 lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "_log_env" and not str(record.msg).startswith(HOOK_TABLE)


_SETUP_DUMP_FILTER = SetupDumpFilter()


class QuietConsoleRunner(Runner):
    """mmengine's Runner with its set-up dumps in the work dir's log file only: the console
    keeps the progress, warnings and results. (The dump's "GPU number" is mmengine's world
    size, reported even on CPU, so it stays out of the console too.)"""

    def build_logger(self, log_level: int | str = "INFO", log_file: str | None = None,
                     **kwargs: Any) -> MMLogger:
        """mmengine's logger, with :class:`SetupDumpFilter` on its console handler (the
        runner builds the logger just before logging the environment)."""
        logger = super().build_logger(log_level, log_file, **kwargs)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(_SETUP_DUMP_FILTER)  # logging skips a filter added twice
        return logger


class WholeCheckpointRunner(QuietConsoleRunner):
    """:class:`QuietConsoleRunner` that loads ``load_from`` whole or not at all
    (:mod:`wsss.seg.checkpoint`), where mmengine's loads what matches and goes on: evaluating
    a network the checkpoint did not set would report the mIoU of random weights."""

    def load_checkpoint(self, filename: str, map_location: Any = "cpu", strict: bool = False,
                        revise_keys: Any = None) -> dict[str, Any]:
        """Read ``filename`` as data and load all of it into the model (the arguments of
        mmengine's method are accepted and ignored: this is always strict, on the CPU first)."""
        checkpoint = read_checkpoint(filename)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        self.load_weights(checkpoint, filename)
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint

    def load_weights(self, checkpoint: dict[str, Any], filename: str) -> None:
        """Copy the read ``checkpoint`` into the model, all of it."""
        load_whole(self.unwrapped_model, checkpoint, filename)

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The segmentor, without a DDP wrapper."""
        return self.model.module if is_model_wrapper(self.model) else self.model


class InitCheckpointRunner(WholeCheckpointRunner):
    """The training runner: ``load_from`` is a checkpoint of this config, loaded whole, or a ResNet
    in the deeplab-pytorch or torchvision layout, which must set the whole backbone
    (:func:`~wsss.seg.pretrained.load_backbone_state`); mmengine would load what matches."""

    def load_weights(self, checkpoint: dict[str, Any], filename: str) -> None:
        """A segmentor checkpoint whole, a ResNet one into the backbone, or a :class:`UserError`."""
        state = state_dict_of(checkpoint, filename)
        layout = detect_layout(state)
        if layout in ("deeplab-pytorch", "torchvision"):
            load_backbone_state(self.unwrapped_model.backbone, state, filename, layout)
        else:
            super().load_weights(checkpoint, filename)


def check_work_dir(work_dir: str | os.PathLike) -> None:
    """Refuse a work dir holding a link that leads outside it: mmengine writes its checkpoints,
    config dump and logs there by name, following links (this project's own tables go through
    :func:`~tagclip_cls.runtime.atomic_io.atomic_write`, which checks each one)."""
    root = Path(work_dir)
    if root.is_dir():
        for entry in root.iterdir():
            inside_root(root, entry)


def build_runner(cfg: Config, runner_type: type[QuietConsoleRunner] = QuietConsoleRunner) -> Runner:
    """mmengine's Runner for ``cfg`` (set-up dumps to the log file only), after the fixes a
    CPU-only ``torchrun`` launch needs, once the work dir is checked."""
    check_work_dir(cfg.work_dir)
    prepare_cpu_distributed(cfg)
    return runner_type.from_cfg(cfg)


def skip_pretrained_init(cfg: Config) -> None:
    """Drop the backbone's pretrained init when ``load_from`` or ``--resume`` sets the backbone
    anyway (mmengine initialises before loading), so its file need not exist."""
    backbone = cfg.model.get("backbone", {})
    if "Pretrained" in str((backbone.get("init_cfg") or {}).get("type", "")):
        backbone.init_cfg = None


def train(cfg: Config) -> Path:
    """Train as configured; returns the work dir (holding checkpoints, logs and the
    ``results_val`` tables of the last validation). Denormals are flushed on CPU."""
    if cfg.get("load_from") or cfg.get("resume"):
        skip_pretrained_init(cfg)
    with flush_denormals(get_device() == "cpu"):
        runner = build_runner(cfg, InitCheckpointRunner)
        runner.train()
    return Path(runner.work_dir)


def evaluate(cfg: Config, checkpoint: str | os.PathLike) -> dict[str, float]:
    """Evaluate ``checkpoint`` on the config's test split; the result tables go to
    ``WORK_DIR/results_test.{json,md}``. Returns the summary metrics. A checkpoint that does not
    set every weight of the network is refused (:class:`WholeCheckpointRunner`)."""
    if not osp.isfile(checkpoint):
        raise MissingFileError(f"{checkpoint}: checkpoint not found")
    cfg.load_from = osp.abspath(checkpoint)
    cfg.resume = False
    with flush_denormals(get_device() == "cpu"):
        return build_runner(cfg, WholeCheckpointRunner).test()
