"""Datasets whose training labels come from a folder of stage-2 pseudo masks.

Every dataset here lists its images (from a split file of IDs, or by scanning the image
folder) and reads the label of image ``ID`` from ``pseudo_mask_dir/ID.png`` when
``pseudo_mask_dir`` is set (training), otherwise from the ground-truth folder in
``data_prefix['seg_map_path']`` (validation / test, or a fully supervised upper bound).
All files are checked when the dataset is built, so a missing mask is reported up front
with its path instead of failing hours into training.

Mask convention: single-channel (palette or grayscale) PNG, class index per pixel, 255 ignore.
For VOC and COCO-Object index 0 is background and object class ``c`` is ``c + 1``; COCO-Stuff-27
has no background (0..26 are the coarse classes).
"""
from __future__ import annotations

import logging
import os.path as osp
from typing import Any

import mmengine.fileio as fileio
from mmengine.logging import print_log
from mmengine.registry import DefaultScope
import numpy as np
from mmseg.datasets import BaseSegDataset, COCOStuffDataset, PascalVOCDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

from tagclip_cls.core.presets import coarse27_names, load_preset
from tagclip_cls.formats.mask_png import label_png_problem
from tagclip_cls.runtime.resources import data_file
from wsss.seg.errors import MissingFileError, SegUserError

IGNORE_INDEX = 255


#: lookup tables from raw ground-truth PNG values to training ids, by name
LABEL_REMAPS: dict[str, np.ndarray] = {"cocostuff_to_coarse27": load_preset("cocostuff").clip_es.png_value_lookups()[1]}


class PseudoMaskDataset(BaseSegDataset):
    """A segmentation dataset that can take its labels from a pseudo-mask folder.

    Args:
        pseudo_mask_dir: folder of ``ID.png`` pseudo masks; when set, they replace the
            ground truth as labels (used for the training split).
        ann_file: optional split file whose lines start with an image ID (the project's
            ``ID label ...`` split files, plain ID lists, and DeepLab-style
            ``/JPEGImages/ID.jpg /SegmentationClassAug/ID.png`` lines all work).
        list_from: without a split file, which folder lists the images: ``"images"``
            (every image, each must have a mask) or ``"masks"`` (every image with a mask in
            the folder labels are read from, e.g. COCO ground truth written only for images
            with annotations).
        gt_remap: name of a lookup table in ``LABEL_REMAPS`` applied to the ground-truth
            maps when they are stored in another label space (never to pseudo masks).
        shipped_split: name of a split file shipped in the project's ``data/splits`` (e.g. the
            published evaluation list), used as ``ann_file``; give one or the other.
        expected_images: how many images the full split has (e.g. 4,952 for COCO-Object val);
            another count is warned about in one line (a partial data set is allowed).
        **kwargs: as for mmseg's ``BaseSegDataset``. Without ``seg_map_path`` in
            ``data_prefix`` and without ``pseudo_mask_dir`` the images are listed without
            labels (a test set without public ground truth, e.g. VOC test).
    """

    def __init__(self, pseudo_mask_dir: str | None = None, list_from: str = "images",
                 gt_remap: str | None = None, shipped_split: str | None = None,
                 expected_images: int | None = None, **kwargs: Any) -> None:
        if list_from not in ("images", "masks"):
            raise ValueError(f"list_from must be 'images' or 'masks', got {list_from!r}")
        if gt_remap is not None and gt_remap not in LABEL_REMAPS:
            raise ValueError(f"unknown gt_remap {gt_remap!r}; known: {sorted(LABEL_REMAPS)}")
        if shipped_split is not None:
            if kwargs.get("ann_file"):
                raise SegUserError(f"dataset: give ann_file ({kwargs['ann_file']}) or shipped_split "
                                   f"({shipped_split}), not both (set shipped_split=None to use ann_file)")
            kwargs["ann_file"] = str(data_file("splits", shipped_split))
        self.pseudo_mask_dir = pseudo_mask_dir
        self.list_from = list_from
        self.gt_remap = gt_remap
        self.expected_images = expected_images
        # the pipeline names mmseg transforms: resolve them in mmseg's scope even when the
        # dataset is built outside a Runner
        with DefaultScope.overwrite_default_scope("mmseg"):
            super().__init__(**kwargs)

    def _scan(self, folder: str, suffix: str, what: str) -> list[str]:
        if not osp.isdir(folder):
            raise MissingFileError(f"{folder}: {what} folder not found")
        return sorted(f[:-len(suffix)] for f in fileio.list_dir_or_file(
            folder, list_dir=False, suffix=suffix, recursive=True))

    def _image_ids(self, img_dir: str, mask_dir: str, mask_suffix: str) -> list[str]:
        if self.ann_file:
            if not osp.isfile(self.ann_file):
                raise MissingFileError(f"{self.ann_file}: split file not found")
            ids = []
            for line in fileio.get_text(self.ann_file).splitlines():
                token = line.strip().split()[0] if line.strip() else ""
                if token:
                    ids.append(osp.splitext(osp.basename(token))[0] if "/" in token else token)
            return ids
        if self.list_from == "masks":
            return self._scan(mask_dir, mask_suffix, "mask")
        return self._scan(img_dir, self.img_suffix, "image")

    def load_data_list(self) -> list[dict]:
        """List (image, mask) pairs, checking that every file exists."""
        img_dir = self.data_prefix.get("img_path", "")
        if self.pseudo_mask_dir:
            if not osp.isdir(self.pseudo_mask_dir):
                raise MissingFileError(f"{self.pseudo_mask_dir}: pseudo-mask folder not found")
            mask_dir, suffix, remap, kind = self.pseudo_mask_dir, ".png", None, "pseudo mask"
        else:
            mask_dir, suffix = self.data_prefix.get("seg_map_path", ""), self.seg_map_suffix
            remap, kind = self.gt_remap, "ground-truth mask"
        num_classes = len(self._metainfo["classes"])
        data_list = []
        for img_id in self._image_ids(img_dir, mask_dir, suffix):
            img_path = osp.join(img_dir, img_id + self.img_suffix)
            seg_path = osp.join(mask_dir, img_id + suffix) if mask_dir else None
            if not osp.isfile(img_path):
                raise MissingFileError(f"{img_path}: image not found (listed as {img_id})")
            if seg_path is not None and not osp.isfile(seg_path):
                raise MissingFileError(f"{seg_path}: {kind} missing for image {img_id}")
            data_list.append(dict(img_path=img_path, seg_map_path=seg_path,
                                  label_map=self.label_map, label_remap=remap,
                                  num_classes=num_classes,
                                  reduce_zero_label=self.reduce_zero_label, seg_fields=[]))
        if not data_list:
            raise SegUserError(f"{self.ann_file or img_dir}: no images found")
        if self.expected_images is not None and len(data_list) != self.expected_images:
            print_log(f"{self.ann_file or mask_dir or img_dir}: {len(data_list)} images, but the full split has "
                      f"{self.expected_images}: scores are not comparable with published ones", "current", logging.WARNING)
        return data_list


@DATASETS.register_module()
class VOCPseudoMaskDataset(PseudoMaskDataset):
    """PASCAL VOC 2012 (21 classes incl. background), e.g. the SBD ``train_aug`` split."""

    METAINFO = PascalVOCDataset.METAINFO

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = ".png",
                 **kwargs: Any) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class COCOObjectDataset(PseudoMaskDataset):
    """COCO-Object: background + the 80 COCO thing classes (class ``c`` stored as ``c + 1``)."""

    METAINFO = dict(classes=("background",) + tuple(COCOStuffDataset.METAINFO["classes"][:80]),
                    palette=[[0, 0, 0]] + list(COCOStuffDataset.METAINFO["palette"][:80]))

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = ".png",
                 **kwargs: Any) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class COCOStuff27Dataset(PseudoMaskDataset):
    """COCO-Stuff-164k evaluated on the 27 coarse classes (no background class).

    By default the ground truth is read from the official ``stuffthingmaps`` PNGs (values
    0..181, 255 unlabeled) and mapped to 0..26 on load; for masks already in 0..26 (e.g.
    ``tools/prepare_data.py stuff-masks``) set ``gt_remap=None``. Pseudo masks must hold 0..26.
    """

    METAINFO = dict(
        classes=coarse27_names(),  # the cocostuff preset's clip_es.coarse27_names
        palette=[[(37 * i) % 256, (91 * i + 60) % 256, (151 * i + 120) % 256] for i in range(27)])

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = ".png",
                 gt_remap: str | None = "cocostuff_to_coarse27", **kwargs: Any) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         gt_remap=gt_remap, **kwargs)


@TRANSFORMS.register_module()
class LoadCheckedAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` plus a check of the mask and the dataset's value remap.

    A mask that is not a PNG of mode L or P (checked before mmseg decodes it, since it would
    cast any image to uint8), does not match its image's size, or holds a value
    outside ``0..num_classes-1`` and 255 raises ``SegUserError`` naming the file (rather than
    an index error deep inside the loss).
    """

    def _load_seg_map(self, results: dict) -> None:
        problem = label_png_problem(results["seg_map_path"])
        if problem:
            raise SegUserError(f"{results['seg_map_path']}: mask must be a single-channel (palette or grayscale) "
                               f"PNG: {problem}")
        super()._load_seg_map(results)
        path, seg = results["seg_map_path"], results["gt_seg_map"]
        if seg.ndim != 2:  # mmseg squeezes: a mask of one row or column
            raise SegUserError(f"{path}: mask must be a single-channel (palette or grayscale) "
                               f"PNG, got shape {seg.shape}")
        remap = results.get("label_remap")
        if remap is not None:
            seg = LABEL_REMAPS[remap][seg]
            results["gt_seg_map"] = seg
        img_shape = results.get("ori_shape", seg.shape)[:2]
        if seg.shape != tuple(img_shape):
            raise SegUserError(f"{path}: mask is {seg.shape[1]}x{seg.shape[0]} but its image "
                               f"is {img_shape[1]}x{img_shape[0]}")
        num_classes = results.get("num_classes")
        if num_classes is not None:
            bad = np.setdiff1d(np.unique(seg), [*range(num_classes), IGNORE_INDEX])
            if bad.size:
                raise SegUserError(f"{path}: mask values {bad.tolist()[:5]} outside 0..{num_classes - 1} "
                                   f"and {IGNORE_INDEX}")
