import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tagclip_cls.formats.annotations import coco_split_rows, voc_split_rows
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.presets import load_preset
from tagclip_cls.formats.splits import write_split
from wsss.evaluation.gt_masks import mask_split_rows, write_coco_masks, write_stuff_masks
from tagclip_cls.formats.mask_png import read_label_png, write_label_png

ROOT = Path(__file__).resolve().parent.parent
VOC_CLASSES = load_preset("voc2007").classes
COCO_CLASSES = load_preset("coco2017").classes
# the 80 COCO category ids: 1..90 without the 10 unused ones
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "prepare_data.py"), *map(str, args)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def voc_xml(*objects):
    body = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult></object>" for n, d in objects)
    return f"<annotation><filename>x.jpg</filename>{body}</annotation>"


@pytest.fixture
def voc_root(tmp_path):
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations" / "000001.xml").write_text(voc_xml(("dog", 0), ("person", 0), ("dog", 0)))
    (root / "Annotations" / "000002.xml").write_text(voc_xml(("tvmonitor", 0), ("chair", 1)))
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    return root


def test_voc_split_includes_difficult_by_default(voc_root, tmp_path):
    rows = voc_split_rows(voc_root, "test", VOC_CLASSES)
    assert rows == [("000001", [11, 14]), ("000002", [8, 19])]
    assert voc_split_rows(voc_root, "test", VOC_CLASSES, include_difficult=False)[1] == ("000002", [19])
    out = tmp_path / "voc07_test.txt"
    assert run_tool("voc-split", "--voc-root", voc_root, "--out", out).returncode == 0
    assert out.read_text() == "000001 dog person\n000002 chair tvmonitor\n"


def test_voc_errors_name_the_file(voc_root):
    (voc_root / "Annotations" / "000002.xml").write_text(voc_xml(("unicorn", 0)))
    with pytest.raises(UserError, match=r"000002\.xml: unknown object class 'unicorn'"):
        voc_split_rows(voc_root, "test", VOC_CLASSES)
    (voc_root / "Annotations" / "000002.xml").write_text("<annotation>")
    r = run_tool("voc-split", "--voc-root", voc_root, "--out", voc_root / "o.txt")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "000002.xml: malformed XML" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def rle(mask):
    """Uncompressed COCO RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F").astype(int)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": list(mask.shape), "counts": counts}


@pytest.fixture
def coco_json(tmp_path):
    big = np.zeros((8, 10), bool)
    big[:, :6] = True
    small = np.zeros((8, 10), bool)
    small[2:4, 2:4] = True
    crowd = np.zeros((8, 10), bool)
    crowd[:, 8:] = True
    crowd[0, 5] = True  # overlaps the big instance
    data = {
        "categories": [{"id": i, "name": f"c{i}"} for i in reversed(COCO_IDS)],
        "images": [{"id": 7, "file_name": "000000000007.jpg", "height": 8, "width": 10},
                   {"id": 3, "file_name": "000000000003.jpg", "height": 8, "width": 10},
                   {"id": 9, "file_name": "000000000009.jpg", "height": 8, "width": 10}],
        "annotations": [
            # the small bicycle comes first: painting largest-first must keep it visible
            {"id": 1, "image_id": 7, "category_id": 2, "iscrowd": 0, "segmentation": rle(small)},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "segmentation": rle(big)},
            {"id": 3, "image_id": 7, "category_id": 4, "iscrowd": 1, "segmentation": rle(crowd)},
            {"id": 4, "image_id": 3, "category_id": 90, "iscrowd": 0,
             "segmentation": [[1.0, 1.0, 6.0, 1.0, 6.0, 6.0, 1.0, 6.0]]},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path, big, small, crowd


def test_coco_split_maps_sorted_category_ids(coco_json, tmp_path):
    path = coco_json[0]
    # category 1 -> person (0), 2 -> bicycle (1), 4 -> motorbike (3), 90 -> toothbrush (79)
    assert coco_split_rows(path, 80) == [("000000000003", [79]), ("000000000007", [0, 1, 3])]
    assert coco_split_rows(path, 80, keep_empty=True)[-1] == ("000000000009", [])
    out = tmp_path / "coco.txt"
    write_split(out, coco_split_rows(path, 80), COCO_CLASSES)
    assert out.read_text() == "000000000003 toothbrush\n000000000007 person bicycle motorbike\n"
    with pytest.raises(UserError, match="instances.json: 80 categories, the preset has 20"):
        coco_split_rows(path, 20)


def test_coco_masks_order_and_crowd(coco_json, tmp_path):
    path, big, small, crowd = coco_json
    out = tmp_path / "masks"
    assert write_coco_masks(path, out, 80, progress=False) == (2, 0)
    mask = read_label_png(out / "000000000007.png")
    expected = np.zeros((8, 10), np.uint8)
    expected[crowd] = 255
    expected[big] = 1  # person + 1, over the crowd pixel
    expected[small] = 2  # bicycle + 1, on top of the larger person
    assert (mask == expected).all()
    polygon = read_label_png(out / "000000000003.png")
    assert polygon[3, 3] == 80 and polygon[0, 9] == 0
    assert not (out / "000000000009.png").exists()
    assert write_coco_masks(path, out, 80, progress=False) == (0, 2)  # resumable
    write_coco_masks(path, out, 80, crowd="class", overwrite=True, progress=False)
    assert read_label_png(out / "000000000007.png")[5, 9] == 4  # motorbike + 1
    r = run_tool("coco-masks", "--instances", path, "--out", tmp_path / "m2", "--keep-empty", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (read_label_png(tmp_path / "m2" / "000000000009.png") == 0).all()


def test_stuff_masks_map_to_coarse27(tmp_path):
    # png values: 0 person -> 9, 1 bicycle -> 11, 11 unused -> 255, 181 wood -> 24 (solid), 255 stays
    values = np.array([[0, 1, 11], [181, 255, 0]], np.uint8)
    write_label_png(tmp_path / "src" / "a.png", values)
    assert write_stuff_masks(tmp_path / "src", tmp_path / "out", load_preset("cocostuff"), progress=False) == (1, 0)
    assert read_label_png(tmp_path / "out" / "a.png").tolist() == [[9, 11, 255], [24, 255, 9]]
    write_label_png(tmp_path / "src" / "b.png", np.array([[200]], np.uint8))
    with pytest.raises(UserError, match=r"b\.png: value 200 is not a COCO-Stuff label"):
        write_stuff_masks(tmp_path / "src", tmp_path / "out", load_preset("cocostuff"), progress=False)


def test_split_from_masks(tmp_path):
    write_label_png(tmp_path / "voc" / "x.png", np.array([[0, 15, 255], [12, 12, 0]], np.uint8))
    assert mask_split_rows(tmp_path / "voc", load_preset("voc2012"), progress=False) == [("x", [11, 14])]
    write_label_png(tmp_path / "voc" / "y.png", np.array([[21]], np.uint8))
    with pytest.raises(UserError, match=r"y\.png: value 21 is not a voc2012 label"):
        mask_split_rows(tmp_path / "voc", load_preset("voc2012"), progress=False)
    # COCO-Stuff: png value 12 is 'stop sign' (class 11), value 181 'wood' (class 170)
    write_label_png(tmp_path / "stuff" / "s.png", np.array([[12, 181, 255]], np.uint8))
    (tmp_path / "ids.txt").write_text("s\n")
    out = tmp_path / "stuff.txt"
    r = run_tool("mask-split", "--masks", tmp_path / "stuff", "--dataset", "cocostuff",
                 "--ids", tmp_path / "ids.txt", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert out.read_text() == "s stop_sign wood\n"
    again = run_tool("mask-split", "--masks", tmp_path / "nope", "--dataset", "cocostuff", "--out", out)
    assert again.returncode == 0 and "exists, kept" in again.stdout
    missing = run_tool("mask-split", "--masks", tmp_path / "nope", "--dataset", "cocostuff",
                       "--out", out, "--overwrite")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nope'}: directory not found"
