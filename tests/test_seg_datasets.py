"""Stage 3 datasets, mask loading and configs: pseudo masks for training, ground truth for
validation, clear errors, and every shipped config building on small official layouts."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsss.seg.datasets import COCOStuff27Dataset, LoadCheckedAnnotations, VOCPseudoMaskDataset
from wsss.seg.errors import MissingFileError, SegUserError
from wsss.seg.runner import load_config
from tagclip_cls.formats.mask_png import write_label_png
from wsss.seg.synthetic import write_synthetic_voc

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs/tiny/deeplabv2_r18-tiny_voc-64x64.py"
LOAD = [dict(type="LoadImageFromFile"), dict(type="LoadCheckedAnnotations")]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return write_synthetic_voc(tmp_path_factory.mktemp("voc"), num_train=4, num_val=3, seed=1)


def _voc_dataset(root, split, **kw):
    return VOCPseudoMaskDataset(data_root=str(root), ann_file=f"ImageSets/Segmentation/{split}.txt",
                                data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
                                pipeline=LOAD, **kw)


def _png(path):
    return np.array(Image.open(path))


def test_training_reads_pseudo_masks_and_validation_reads_ground_truth(voc):
    train = _voc_dataset(voc, "train_aug", pseudo_mask_dir=str(voc / "pseudo_masks"))
    val = _voc_dataset(voc, "val", test_mode=True)
    assert len(train) == 4 and len(val) == 3
    sample = train[0]
    assert Path(sample["seg_map_path"]) == voc / "pseudo_masks/train_0000.png"
    np.testing.assert_array_equal(sample["gt_seg_map"], _png(voc / "pseudo_masks/train_0000.png"))
    # the pseudo mask really differs from the ground truth, so the check above is meaningful
    assert (sample["gt_seg_map"] != _png(voc / "SegmentationClass/train_0000.png")).any()
    v = val[2]
    assert Path(v["seg_map_path"]) == voc / "SegmentationClass/val_0002.png"
    np.testing.assert_array_equal(v["gt_seg_map"], _png(voc / "SegmentationClass/val_0002.png"))
    assert len(train.metainfo["classes"]) == 21


def test_split_files_with_labels_or_deeplab_paths_are_read(voc, tmp_path):
    split = tmp_path / "split.txt"
    split.write_text("train_0001 3 7\n\n/JPEGImages/train_0002.jpg /SegmentationClassAug/train_0002.png\n")
    ds = VOCPseudoMaskDataset(data_root=str(voc), ann_file=str(split), pipeline=LOAD,
                              data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"))
    assert [Path(d["img_path"]).name for d in ds.load_data_list()] == ["train_0001.jpg", "train_0002.jpg"]


def test_missing_pseudo_mask_names_the_file(voc, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in sorted((voc / "pseudo_masks").glob("*.png"))[:-1]:
        (masks / p.name).write_bytes(p.read_bytes())
    with pytest.raises(MissingFileError, match=r"masks/train_0003\.png: pseudo mask missing for image train_0003"):
        _voc_dataset(voc, "train_aug", pseudo_mask_dir=str(masks))
    with pytest.raises(MissingFileError, match="nowhere: pseudo-mask folder not found"):
        _voc_dataset(voc, "train_aug", pseudo_mask_dir=str(tmp_path / "nowhere"))


def _load(tmp_path, mask, shape=(8, 8), **info):
    img = tmp_path / "a.jpg"
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(img)
    seg = tmp_path / "a.png"
    Image.fromarray(mask).save(seg)
    results = dict(img_path=str(img), seg_map_path=str(seg), reduce_zero_label=False,
                   seg_fields=[], ori_shape=shape, **info)
    return LoadCheckedAnnotations()(results)


def test_malformed_masks_raise_one_clear_error(tmp_path):
    with pytest.raises(SegUserError, match="a.png: mask must be a single-channel"):
        _load(tmp_path, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SegUserError, match="a.png: mask is 4x8 but its image is 8x8"):
        _load(tmp_path, np.zeros((8, 4), np.uint8))
    bad = np.zeros((8, 8), np.uint8)
    bad[0, 0], bad[1, 1] = 30, 255
    with pytest.raises(SegUserError, match=r"a.png: mask values \[30\] outside 0..20 and 255"):
        _load(tmp_path, bad, num_classes=21)
    ok = _load(tmp_path, np.where(bad == 30, 20, bad).astype(np.uint8), num_classes=21)
    assert ok["gt_seg_map"][0, 0] == 20


def test_cocostuff_ground_truth_is_mapped_to_27_coarse_classes(tmp_path):
    # raw stuffthingmap values: 0 person, 11 (unused COCO id 12), 91 banner, 181 wood, 255
    raw = np.array([[0, 11, 91, 181, 255, 2]] * 2, np.uint8)
    out = _load(tmp_path, raw, shape=(2, 6), label_remap="cocostuff_to_coarse27", num_classes=27)
    assert out["gt_seg_map"].tolist() == [[9, 255, 17, 24, 255, 11]] * 2
    assert len(COCOStuff27Dataset.METAINFO["classes"]) == 27


# ---- every shipped config builds its model and datasets on small official layouts ----

def _jpg(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)


def _mask(path, value, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_label_png(path, np.full((size[1], size[0]), value, np.uint8))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    base = tmp_path_factory.mktemp("layouts")
    voc = base / "VOCdevkit/VOC2012"
    for i in ("2007_000032", "2007_000033"):
        _jpg(voc / f"JPEGImages/{i}.jpg")
        _mask(voc / f"SegmentationClass/{i}.png", 1)
        _mask(voc / f"SegmentationClassAug/{i}.png", 1)
        _mask(base / f"voc_pseudo/{i}.png", 15)
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/train_aug.txt").write_text("2007_000032\n2007_000033\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n")
    coco = base / "coco"
    for i in ("000000000009", "000000000025"):
        _jpg(coco / f"images/train2017/{i}.jpg")
        _mask(base / f"coco_pseudo/{i}.png", 80)
    for i in ("000000000139", "000000000285"):
        _jpg(coco / f"images/val2017/{i}.jpg")
    _mask(coco / "masks_object/val2017/000000000139.png", 1)  # 000000000285 has no objects
    stuff = base / "coco_stuff164k"
    for split, i in (("train2017", "000000000009"), ("val2017", "000000000139")):
        _jpg(stuff / f"images/{split}/{i}.jpg")
        _mask(stuff / f"annotations/{split}/{i}.png", 181)
    _mask(base / "stuff_pseudo/000000000009.png", 26)
    return base


CONFIGS = [
    ("deeplabv2/deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py", "VOCdevkit/VOC2012", "voc_pseudo", 21),
    ("deeplabv2/deeplabv2_torchvision-r101-d8_single-scale-20k_voc12aug-321x321.py", "VOCdevkit/VOC2012", "voc_pseudo", 21),
    ("deeplabv3plus/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512.py", "VOCdevkit/VOC2012", "voc_pseudo", 21),
    ("deeplabv3plus/deeplabv3plus_r101-d8_4xb4-40k_voc12aug-512x512.py", "VOCdevkit/VOC2012", "voc_pseudo", 21),
    ("deeplabv3plus/deeplabv3plus_r101-d8_4xb4-80k_coco-object-512x512.py", "coco", "coco_pseudo", 81),
    ("deeplabv3plus/deeplabv3plus_r101-d8_4xb4-80k_coco-stuff27-512x512.py", "coco_stuff164k", "stuff_pseudo", 27),
    ("tiny/deeplabv2_r18-tiny_voc-64x64.py", "VOCdevkit/VOC2012", "voc_pseudo", 21),
    ("tiny/deeplabv2-msc_r50-caffe-tiny_voc-64x64.py", "VOCdevkit/VOC2012", "voc_pseudo", 21),
]


@pytest.mark.parametrize("config,root,pseudo,num_classes", CONFIGS, ids=[c[0].split("/")[0] + "-" + c[2] for c in CONFIGS])
def test_configs_build_model_and_datasets(layouts, config, root, pseudo, num_classes):
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    # the layout has one val image, not the 4,172 of the shipped COCO-Stuff list (test_seg_protocol)
    cfg = load_config(REPO / "configs" / config, pseudo_masks=str(layouts / pseudo),
                      data_root=str(layouts / root),
                      cfg_options={"val_dataloader.dataset.shipped_split": None} if "stuff" in config else None)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert model.decode_head.num_classes == num_classes
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(train.metainfo["classes"]) == len(val.metainfo["classes"]) == num_classes
    assert all(Path(d["seg_map_path"]).parent == layouts / pseudo for d in train.load_data_list())
    label = _png(next(iter(val.load_data_list()))["seg_map_path"])
    sample = train[0]  # the full training pipeline runs on a pseudo mask
    expected = set(np.unique(_png(train.get_data_info(0)["seg_map_path"])).tolist())
    assert set(np.unique(sample["data_samples"].gt_sem_seg.data.numpy()).tolist()) == expected
    v = val[0]["data_samples"].gt_sem_seg.data.numpy()
    assert v.shape[-2:] == label.shape
    if "stuff" in config:
        assert set(np.unique(v)) == {24}  # raw 181 (wood) -> coarse "solid"
    else:
        np.testing.assert_array_equal(v[0], label)
    if "coco-object" in config:
        assert len(val) == 1  # only images with a ground-truth mask are evaluated
    if "deeplabv3plus" not in config:  # (a ResNet-101 at 512x512 is too slow for CPU tests)
        # the training loss on the pipeline's output, padded to the crop size
        batch = model.data_preprocessor(pseudo_collate([sample]), True)
        assert tuple(batch["inputs"].shape[-2:]) == tuple(cfg.crop_size)
        with torch.no_grad():
            losses = model.train()(**batch, mode="loss")
        loss = sum(value for name, value in losses.items() if "loss" in name)  # as mmengine sums them
        assert loss.isfinite() and loss > 0


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_train_tool_reports_user_mistakes_in_one_line(voc, tmp_path, capsys):
    from tagclip_cls.cli import run_cli
    train_seg = _tool("train_seg")
    cases = [
        ([str(tmp_path / "none.py"), "--pseudo-masks", str(voc)], "none.py: config file not found"),
        ([str(TINY), "--pseudo-masks", str(tmp_path / "nomasks")], "nomasks: --pseudo-masks folder not found"),
        ([str(TINY), "--pseudo-masks", str(voc / "pseudo_masks"), "--data-root", str(voc),
          "--work-dir", str(tmp_path / "w"), "--resume"], "has no checkpoint"),
    ]
    empty = tmp_path / "empty_masks"
    empty.mkdir()
    cases.append(([str(TINY), "--pseudo-masks", str(empty), "--data-root", str(voc),
                   "--work-dir", str(tmp_path / "w2")], "train_0000.png: pseudo mask missing for image train_0000"))
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exc:
            run_cli(lambda: train_seg.main(argv))
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and expected in err and err.count("\n") == 1, err


def test_stage3_mistakes_are_user_errors_in_one_line():
    """Stage 3's mistakes reach every tool's run_cli as UserErrors, also when a DataLoader worker
    re-raised one with its traceback folded into the message (torch's ``ExceptionWrapper``)."""
    from tagclip_cls.runtime.errors import UserError

    assert issubclass(SegUserError, UserError) and issubclass(MissingFileError, UserError)
    folded = ("Caught SegUserError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
              '  File "x.py", line 1, in f\nwsss.seg.errors.SegUserError: a.png: mask is 4x8 but its image is 8x8')
    assert str(SegUserError(folded)) == "a.png: mask is 4x8 but its image is 8x8"
    assert str(MissingFileError(folded.replace("errors.SegUserError", "errors.MissingFileError"))) == \
        "a.png: mask is 4x8 but its image is 8x8"
    assert str(SegUserError("cfg.py: config file not found")) == "cfg.py: config file not found"
