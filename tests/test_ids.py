"""Hostile image ids: every tool refuses them with a one-line ``file:line`` error and writes nothing."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.ids import MAX_ID_BYTES, check_image_id, id_problem, path_inside
from tagclip_cls.formats.mask_png import write_label_png

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent
GOOD_IDS = ["2007_000032", "COCO_val2014_000000000042", "a.b", "x" * MAX_ID_BYTES, "é" * (MAX_ID_BYTES // 2)]
BAD_IDS = ["../../../x", "/abs/path/img", "sub/dir/img", "a\\b", "..", ".", ".hidden", "",
           "x" * (MAX_ID_BYTES + 1), "é" * (MAX_ID_BYTES // 2 + 1), "tab\there", "nl\nhere", "nul\x00",
           "bom\ufeffid", "c:\\x"]


@pytest.mark.parametrize("image_id", GOOD_IDS)
def test_good_ids_pass(image_id):
    assert id_problem(image_id) is None
    assert check_image_id(image_id, "f.txt:1") == image_id


@pytest.mark.parametrize("image_id", BAD_IDS)
def test_bad_ids_are_refused_naming_the_place(image_id):
    assert id_problem(image_id) is not None
    with pytest.raises(UserError, match=r"^split\.txt:7: "):
        check_image_id(image_id, "split.txt:7")


def test_path_inside(tmp_path):
    assert path_inside(tmp_path, "cams", "a.npz") == tmp_path / "cams" / "a.npz"
    for parts in (("..", "x.png"), ("cams", "/etc/x.png"), ("cams", "..", "..", "x"), (".",)):
        with pytest.raises(UserError, match="would be written outside"):
            path_inside(tmp_path, *parts)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(UserError):
        path_inside(tmp_path, "link", "x.png")


class Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture()
def run(monkeypatch, capsys):
    """Run a tool in this process as its command line would: exit status and stderr."""
    def run_tool(tool: str, *args) -> Result:
        path = str(ROOT / "tools" / tool)
        monkeypatch.setattr(sys, "argv", [path, *map(str, args)])
        with pytest.raises(SystemExit) as exc:
            runpy.run_path(path, run_name="__main__")
        return Result(exc.value.code, capsys.readouterr().err)
    return run_tool


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    write_image(root / "cat.jpg", (40, 50), seed=1)
    write_image(root / "dog.jpg", (40, 50), seed=2)
    return root


def hostile_lines(photos: Path) -> list[str]:
    """Ids that escaped ``--out`` or overwrote an input before they were checked."""
    return ["../../../x", str(photos.parent / "abs"), str(photos / "cat"), "sub/dir/cat", "my photo",
            "y" * 245, ".."]


@pytest.mark.parametrize("index", range(7))
def test_stage2_refuses_hostile_ids(tmp_path, photos, tiny_checkpoint, index, run):
    bad = hostile_lines(photos)[index]
    tags = tmp_path / "tags.txt"
    tags.write_text(f"dog dog\n{bad} cat\n")
    before = snapshot(tmp_path)
    result = run("gen_pseudo_masks.py", "--img-root", photos, "--tags", tags, "--dataset", "voc2012",
                 "--pretrained", tiny_checkpoint, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tags}:2: "), result.stderr
    assert snapshot(tmp_path) == before  # nothing written anywhere, the photos untouched
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("index", range(7))
def test_stage1_refuses_hostile_ids(tmp_path, photos, tiny_checkpoint, index, run):
    bad = hostile_lines(photos)[index]
    split = tmp_path / "split.txt"
    split.write_text(f"cat\n{bad}\n")
    result = run("gen_tags.py", "--img-root", photos, "--split", split, "--dataset", "voc2007",
                 "--pretrained", tiny_checkpoint, "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {split}:2: "), result.stderr
    assert not (tmp_path / "out").exists()


def test_stage1_refuses_a_folder_listing_with_a_bad_name(tmp_path, photos, tiny_checkpoint, run):
    write_image(photos / "my photo.jpg", (40, 50), seed=3)
    result = run("gen_tags.py", "--img-root", photos, "--dataset", "voc2007", "--pretrained", tiny_checkpoint,
                 "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {photos / 'my photo.jpg'}: image ids may not contain whitespace "
                                     f"or control characters: 'my photo'")
    assert not (tmp_path / "out").exists()


def test_eval_masks_refuses_hostile_split(tmp_path, run):
    for name in ("pred", "gt"):
        (tmp_path / name).mkdir()
        write_label_png(tmp_path / name / "a.png", np.zeros((4, 4), np.uint8))
    split = tmp_path / "val.txt"
    split.write_text("a\n../gt/a\n")
    result = run("eval_masks.py", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--dataset", "voc2012",
                 "--split", split, "--out", tmp_path / "res.json")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {split}:2: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "res.json").exists()


def test_stuff_masks_never_rewrite_their_source(tmp_path, run):
    src = tmp_path / "stuff"
    src.mkdir()
    values = np.array([[0, 1], [181, 255]], np.uint8)
    Image.fromarray(values).save(src / "000001.png")
    ids = tmp_path / "ids.txt"
    ids.write_text(f"000001\n{src / '000001'}\n")
    before = snapshot(src)
    result = run("prepare_data.py", "stuff-masks", "--masks", src, "--ids", ids, "--out", tmp_path / "out",
                 "--overwrite")
    assert result.returncode == 2 and result.stderr.startswith(f"error: {ids}:2: "), result.stderr
    assert snapshot(src) == before and not (tmp_path / "out").exists()
    ids.write_text("000001\n")
    result = run("prepare_data.py", "stuff-masks", "--masks", src, "--ids", ids, "--out", src, "--overwrite")
    assert result.returncode == 2 and "--out is the --masks input" in result.stderr
    assert snapshot(src) == before


def test_coco_json_file_names_are_checked(tmp_path, run):
    data = {"images": [{"id": 1, "file_name": "ok.jpg", "height": 2, "width": 2},
                       {"id": 2, "file_name": "../../evil.jpg", "height": 2, "width": 2}],
            "annotations": [], "categories": [{"id": i, "name": str(i)} for i in range(1, 81)]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    # "../../evil.jpg" has the stem "evil": a folder part is dropped, not followed
    result = run("prepare_data.py", "coco-masks", "--instances", path, "--out", tmp_path / "out", "--keep-empty")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["evil.png", "ok.png"]
    data["images"][1]["file_name"] = "bad name.jpg"
    path.write_text(json.dumps(data))
    result = run("prepare_data.py", "coco-masks", "--instances", path, "--out", tmp_path / "out2", "--keep-empty")
    assert result.returncode == 2 and "whitespace" in result.stderr
    assert not (tmp_path / "out2").exists()


def test_inside_root_follows_links_and_checks_the_folder(tmp_path):
    from tagclip_cls.runtime.ids import inside_root

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    assert inside_root(out, out / "a" / "b.png") == out / "a" / "b.png"  # not there yet: fine
    (out / "link.png").symlink_to(outside / "x.png")  # dangling, and out
    (out / "away").symlink_to(outside, target_is_directory=True)
    (outside / "back.png").symlink_to(out / "ok.png")  # a name out there leading back in
    for path in (out / "link.png", out / "away" / "x.png", out / "away" / "back.png", out, tmp_path / "x.png"):
        with pytest.raises(UserError, match=rf"^{path}: would be written outside {out} \(it leads to "):
            inside_root(out, path)
