"""Stage 3 from Python: :class:`Segmenter` runs a trained mmsegmentation network on images.

>>> seg = Segmenter.from_checkpoint("configs/deeplabv2/....py", "work_dirs/voc/iter_20000.pth")  # doctest: +SKIP
>>> labels = seg("photo.jpg")   # H x W uint8 label map                                           # doctest: +SKIP
"""
from __future__ import annotations

import os

import numpy as np
import torch

from tagclip_cls.core.images import ImageInput, load_rgb
from tagclip_cls.runtime.errors import UserError
from wsss.seg import register  # noqa: F401  (this project's mmseg modules and checkpoint allowlist)
from wsss.seg.checkpoint import load_whole, read_checkpoint


class Segmenter:
    """A trained segmentation network (mmseg's ``init_model``), called on images."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    @classmethod
    def from_checkpoint(cls, config: "str | os.PathLike | object", checkpoint: str | os.PathLike,
                        device: str = "cpu") -> "Segmenter":
        """Build the network of ``config`` (a path or an mmengine ``Config``) with the weights of
        ``checkpoint``, which must set all of them (:mod:`wsss.seg.checkpoint`)."""
        from mmengine.config import Config
        from mmseg.apis import init_model

        if isinstance(config, (str, os.PathLike)):
            for path, what in ((config, "config"), (checkpoint, "checkpoint")):
                if not os.path.isfile(path):
                    raise UserError(f"{path}: {what} file not found")
            config = Config.fromfile(str(config))
        else:
            config = config.copy()
        # images only: the test pipeline's ground-truth loading has nothing to load here
        config.test_pipeline = [t for t in config.test_pipeline if "Annotations" not in t["type"]]
        model = init_model(config, None, device=device)  # mmseg would load the weights non-strictly
        loaded = read_checkpoint(checkpoint)
        load_whole(model, loaded, checkpoint)
        if "dataset_meta" in loaded.get("meta", {}):  # as init_model keeps it
            model.dataset_meta = loaded["meta"]["dataset_meta"]
        return cls(model)

    def __call__(self, image: ImageInput) -> np.ndarray:
        """The ``H x W`` uint8 label map of one image (path, PIL image or RGB uint8 array)."""
        from mmseg.apis import inference_model

        if isinstance(image, (str, os.PathLike)):
            if not os.path.isfile(image):
                raise UserError(f"{image}: image not found")
            source = str(image)  # decoded by mmseg's own loader, as test_seg.py does
        else:
            source = np.ascontiguousarray(load_rgb(image)[..., ::-1])  # mmseg works on BGR arrays
        result = inference_model(self.model, source)
        return result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
