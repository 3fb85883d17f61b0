"""Numeric class labels on the boundary, for every on-disk format and reader that takes them.

With K labels, ``K - 1`` and ``0`` are accepted and ``K`` is refused with a one-line
``UserError`` naming the file (and the line, for text formats). Each reader gets its own test:

* split files and ``tags.txt`` (``ID label ...``, names or indices ``0..K-1``);
* ``tags.jsonl`` (``tags``: class indices) and the report that reads it;
* ``cams/ID.npz`` (``keys``: class indices) and the CRF step that reads them;
* label PNGs: ground truth read for image labels (``0..K`` with background, 255 ignored;
  COCO-Stuff's raw values ``0..181``), the mIoU evaluation (``0..len(class_names) - 1``),
  stage 3's annotation loader;
* COCO instances JSON (category *ids*, which are not indices);
* :class:`MaskGenerator` tags given as integers.
"""
from pathlib import Path

import numpy as np
import pytest

from tagclip_cls.core.presets import load_preset, make_preset
from tagclip_cls.formats.annotations import coco_split_rows
from tagclip_cls.formats.mask_folder import read_cams, write_cams
from tagclip_cls.formats.mask_png import write_label_png
from tagclip_cls.formats.splits import read_split
from tagclip_cls.formats.tags import TagFolder, read_tag_records, tags_split_file
from tagclip_cls.runtime.errors import UserError
from wsss.evaluation.gt_masks import mask_split_rows, write_coco_masks, write_stuff_masks
from wsss.evaluation.miou import eval_class_names, evaluate_ids

THREE = ("cat", "dog", "traffic light")  # K = 3


def refused(exc_info) -> str:
    """The message of a refusal, checked to be one line."""
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


# ---- split files (names or integer indices) -------------------------------------------------

@pytest.mark.parametrize("dataset", ["voc2012", "coco2017", "cocostuff"])
def test_split_index_k_is_refused_and_k_minus_1_and_0_accepted(tmp_path, dataset):
    classes = load_preset(dataset).classes
    k = len(classes)
    split = tmp_path / "split.txt"
    split.write_text(f"a 0\nb {k - 1}\nc 0 {k - 1}\n")
    assert [(e.image_id, e.labels) for e in read_split(split, classes)] == [
        ("a", (0,)), ("b", (k - 1,)), ("c", (0, k - 1))]
    split.write_text(f"a 0\nb {k - 1} {k}\n")
    with pytest.raises(UserError) as err:
        read_split(split, classes)
    assert refused(err) == f"{split}:2: unknown class label '{k}' (class indices are 0..{k - 1})"


@pytest.mark.parametrize("token", ["-1", "3", "03x", "²", "٢", "3.0"])
def test_split_labels_that_are_not_indices_0_to_k_minus_1_are_refused(tmp_path, token):
    # "²" and "٢" pass str.isdigit: "²" used to crash int() with a ValueError, "٢" was read as 2
    split = tmp_path / "split.txt"
    split.write_text(f"a cat\nb {token}\n")
    with pytest.raises(UserError, match=r"split\.txt:2: unknown class label") as err:
        read_split(split, THREE)
    refused(err)


def test_tags_txt_index_k_is_refused(tmp_path):
    # stage 2 reads stage 1's tags.txt through tags_split_file + read_split
    folder = TagFolder(tmp_path / "stage1")
    folder.root.mkdir()
    folder.txt.write_text("a 0 2\nb traffic_light\n")
    path = tags_split_file(folder.root)
    assert [e.labels for e in read_split(path, THREE)] == [(0, 2), (2,)]
    folder.txt.write_text("a 0 2\nb 1\nc 3\n")
    with pytest.raises(UserError) as err:
        read_split(tags_split_file(folder.root), THREE)
    assert refused(err) == f"{folder.txt}:3: unknown class label '3' (class indices are 0..2)"


# ---- tags.jsonl -----------------------------------------------------------------------------

def _jsonl(path: Path, *tag_lists) -> Path:
    import json
    path.write_text("".join(json.dumps({"id": f"im{i}", "scores": [0.1, 0.2, 0.3], "tags": tags}) + "\n"
                            for i, tags in enumerate(tag_lists)))
    return path


def test_tags_jsonl_tag_k_is_refused_and_k_minus_1_and_0_accepted(tmp_path):
    path = _jsonl(tmp_path / "tags.jsonl", [0], [2], [0, 2], [])
    assert [r["tags"] for r in read_tag_records(path, 3)] == [[0], [2], [0, 2], []]
    assert [r["tags"] for r in TagFolder(tmp_path).records(3)] == [[0], [2], [0, 2], []]
    _jsonl(path, [0], [], [1, 3])
    with pytest.raises(UserError) as err:
        read_tag_records(path, 3)
    assert refused(err) == f"{path}:3: image 'im2': tags must be a list of class indices 0..2"
    with pytest.raises(UserError, match=r"tags\.jsonl:3: image 'im2': tags must be"):
        TagFolder(tmp_path).records(3)
    with pytest.raises(UserError, match=r"tags\.jsonl:3: "):  # without a class count: as many as the scores
        read_tag_records(path)


@pytest.mark.parametrize("tags", [[-1], [True], [1.0], ["1"], [None], 1, None])
def test_tags_jsonl_tags_that_are_not_class_indices_are_refused(tmp_path, tags):
    path = _jsonl(tmp_path / "tags.jsonl", [0], tags)
    with pytest.raises(UserError, match=r"tags\.jsonl:2: image 'im1': tags must be a list of class indices 0\.\.2") as err:
        read_tag_records(path, 3)
    refused(err)


def test_the_report_refuses_a_tag_k_instead_of_dropping_it(tmp_path):
    from wsss.apps.report import ReportInputs, render_report
    path = _jsonl(tmp_path / "tags.jsonl", [0, 3])
    # before, the overview silently left tag 3 out (and a -1 would have shown the last class)
    with pytest.raises(UserError) as err:
        render_report(ReportInputs(images=tmp_path, tags=path, class_names=THREE))
    assert refused(err) == f"{path}:1: image 'im0': tags must be a list of class indices 0..2"


# ---- cams/ID.npz keys -----------------------------------------------------------------------

def test_cam_key_k_is_refused_and_k_minus_1_and_0_accepted(tmp_path):
    path = tmp_path / "cams" / "a.npz"
    path.parent.mkdir()
    write_cams(path, [0, 2], np.zeros((2, 4, 5)))
    keys, cams = read_cams(path, 3)
    assert keys == [0, 2] and cams.shape == (2, 4, 5)
    for bad in (3, -1):
        write_cams(path, [0, bad], np.zeros((2, 4, 5)))
        with pytest.raises(UserError) as err:
            read_cams(path, 3)
        assert refused(err) == (f"{path}: CAM key 3 is not a class index (0..2)" if bad == 3 else
                                f"{path}: CAM keys must be distinct class indices (non-negative integers), "
                                f"got int64 [ 0, -1] of shape (2,)")
    with pytest.raises(UserError, match="non-negative"):  # a negative key, even without a class count
        read_cams(path)


@pytest.mark.parametrize("dataset", ["voc2012", "cocostuff"])
def test_crf_step_refuses_a_cam_key_k(tmp_path, dataset):
    from wsss.masks.crf import CRFJob, CRFWork, run_crf_batch
    from wsss.masks.label_maps import LabelSpace
    from PIL import Image
    preset = load_preset(dataset)
    k = preset.num_classes
    space = LabelSpace.from_preset(preset)
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(tmp_path / "a.png")
    cam = tmp_path / "a.npz"
    job = CRFJob(str(tmp_path / "a.png"), str(cam), str(tmp_path / "out" / "a.png"))
    cams = np.stack([np.full((6, 8), 0.9), np.full((6, 8), 0.2)])
    write_cams(cam, [k - 1, 0], cams)
    assert run_crf_batch([job], CRFWork(space), progress=False).written == 1
    # before, key K was an IndexError deep in rows_to_labels and key -1 became class K - 1
    for bad in (k, -1):
        write_cams(cam, [bad, 0], cams)
        with pytest.raises(UserError) as err:
            run_crf_batch([job], CRFWork(space), overwrite=True, progress=False)
        assert refused(err).startswith(f"{cam}: CAM key {bad} is not a class index (0..{k - 1})" if bad == k else
                                       f"{cam}: CAM keys must be distinct class indices (non-negative integers)")


# ---- label PNGs -----------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["voc2012", "coco2017"])
def test_mask_value_k_plus_1_is_refused_when_reading_image_labels(tmp_path, dataset):
    # background + K classes: values 0..K are labels (class c is c + 1), 255 is ignored
    preset = load_preset(dataset)
    k = preset.num_classes
    write_label_png(tmp_path / "a.png", np.array([[0, k, 255]], np.uint8))
    write_label_png(tmp_path / "b.png", np.array([[0, 1, k + 1]], np.uint8))
    assert mask_split_rows(tmp_path, preset, ["a"], progress=False) == [("a", [k - 1])]
    with pytest.raises(UserError) as err:
        mask_split_rows(tmp_path, preset, ["a", "b"], progress=False)
    assert refused(err) == f"{tmp_path / 'b.png'}: value {k + 1} is not a {dataset} label (0..{k} or 255)"


def test_cocostuff_png_value_182_is_refused(tmp_path):
    # raw stuffthingmaps values are 0..181 (182 of them) and 255
    preset = load_preset("cocostuff")
    limit = len(preset.clip_es.png_value_to_class)
    assert limit == 182
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    write_label_png(src / "a.png", np.array([[0, limit - 1, 255]], np.uint8))
    write_label_png(src / "b.png", np.array([[0, limit]], np.uint8))
    assert write_stuff_masks(src, out, preset, ids=["a"], progress=False) == (1, 0)
    rows = mask_split_rows(src, preset, ["a"], progress=False)
    assert rows == [("a", sorted({int(preset.clip_es.png_value_to_class[0]),
                                  int(preset.clip_es.png_value_to_class[limit - 1])}))]
    for call in (lambda: write_stuff_masks(src, out, preset, ids=["b"], progress=False),
                 lambda: mask_split_rows(src, preset, ["b"], progress=False)):
        with pytest.raises(UserError) as err:
            call()
        assert refused(err) == f"{src / 'b.png'}: value 182 is not a COCO-Stuff label (0..181 or 255)"


@pytest.mark.parametrize("side", ["ground truth", "prediction"])
def test_evaluation_label_k_is_refused_naming_the_file(tmp_path, side):
    names = eval_class_names("voc2012")  # background + 20: labels 0..20
    k = len(names)
    assert k == 21
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for d in (gt_dir, pred_dir):
        d.mkdir()
    ok = np.array([[0, k - 1, 255, k - 1]], np.uint8)
    write_label_png(gt_dir / "a.png", ok)
    write_label_png(pred_dir / "a.png", np.array([[0, k - 1, 3, 255]], np.uint8))
    record = evaluate_ids(pred_dir, gt_dir, ["a"], names)
    assert record["per_class"]["background"]["IoU"] == 100.0
    assert record["per_class"][names[k - 1]] == {"IoU": 50.0, "Acc": 50.0, "gt_pixels": 2, "pred_pixels": 1}
    bad = np.array([[0, k, 255, 1]], np.uint8)
    culprit = (gt_dir if side == "ground truth" else pred_dir) / "a.png"
    write_label_png(culprit, bad)
    with pytest.raises(UserError) as err:
        evaluate_ids(pred_dir, gt_dir, ["a"], names)
    assert refused(err) == f"{culprit}: {side} holds label {k}, expected 0..{k - 1} or 255"


def test_stage3_annotation_value_k_is_refused(tmp_path):
    pytest.importorskip("mmcv.ops")
    from PIL import Image
    from wsss.seg.datasets import LoadCheckedAnnotations
    from wsss.seg.errors import SegUserError

    def load(values):  # two rows: mmseg's loader squeezes a one-row mask to 1-D
        Image.fromarray(np.zeros((2, 4, 3), np.uint8)).save(tmp_path / "a.jpg")
        write_label_png(tmp_path / "a.png", np.array([values, [0] * 4], np.uint8))
        return LoadCheckedAnnotations()(dict(img_path=str(tmp_path / "a.jpg"), seg_map_path=str(tmp_path / "a.png"),
                                             reduce_zero_label=False, seg_fields=[], ori_shape=(2, 4),
                                             num_classes=21))
    assert load([0, 20, 255, 1])["gt_seg_map"].tolist() == [[0, 20, 255, 1], [0] * 4]
    with pytest.raises(SegUserError) as err:
        load([0, 21, 255, 1])
    assert refused(err) == f"{tmp_path / 'a.png'}: mask values [21] outside 0..20 and 255"


# ---- COCO instances JSON: category ids are ids, not indices ---------------------------------

def _coco(path: Path, category_id: int) -> Path:
    import json
    square = [[0, 0, 4, 0, 4, 4, 0, 4]]
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "000001.jpg", "height": 6, "width": 6}],
        "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}, {"id": 90, "name": "c"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": category_id, "segmentation": square,
                         "area": 16, "bbox": [0, 0, 4, 4], "iscrowd": 0}]}))
    return path


def test_coco_category_must_be_one_of_the_listed_ids(tmp_path):
    # three categories (ids 1, 5, 90) -> class indices 0, 1, 2; the id 3 (= K) is no category
    path = _coco(tmp_path / "instances.json", 90)
    assert coco_split_rows(path, 3) == [("000001", [2])]
    assert write_coco_masks(path, tmp_path / "masks", 3, progress=False) == (1, 0)
    _coco(path, 3)
    for call in (lambda: coco_split_rows(path, 3),
                 lambda: write_coco_masks(path, tmp_path / "masks2", 3, progress=False)):
        with pytest.raises(UserError) as err:
            call()
        assert refused(err) == f"{path}: annotation 7: unknown category id 3"


# ---- MaskGenerator tags ---------------------------------------------------------------------

def test_mask_generator_integer_tag_k_is_refused(tiny_clip, tmp_path):
    from PIL import Image
    from wsss.masks.api import MaskGenerator
    generator = MaskGenerator(tiny_clip, make_preset(classes=["cat", "coffee cup"], background=["sky"]),
                              cache_dir=tmp_path / "cache")
    assert generator.class_indices([0, 1, np.int64(1), "coffee_cup"]) == [0, 1, 1, 1]
    for bad in (2, np.int64(2), -1, True, 1.0):
        with pytest.raises(UserError, match=r"unknown class .* for preset") as err:
            generator.class_indices([0, bad])
        refused(err)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(UserError, match="unknown class 2 "):
        generator(tmp_path / "a.png", tags=[2])
