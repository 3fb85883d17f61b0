"""No tool writes over its own input, or into the working directory for an empty output path:
refused in one line (exit 2) before anything is written, with resolved paths compared so that
symlinks and ``..`` are no way around it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_image
from tagclip_cls.runtime.arguments import check_outputs_spare_inputs
from tagclip_cls.runtime.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def run(tool: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"tools/{tool}", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def refused(proc: subprocess.CompletedProcess, *words: str) -> bool:
    return proc.returncode == 2 and proc.stderr.count("\n") == 1 and all(w in proc.stderr for w in words)


@pytest.fixture()
def run_folders(tmp_path):
    """An image folder and a stage-1 folder with its tags.jsonl, as make_report reads them."""
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "cat.jpg", (40, 50))
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    (stage1 / "tags.jsonl").write_text('{"id": "cat", "tags": [7], "scores": []}\n')
    return tmp_path, images, stage1


def test_make_report_refuses_to_replace_its_inputs(run_folders):
    tmp_path, images, stage1 = run_folders
    (tmp_path / "link.html").symlink_to(stage1 / "tags.jsonl")
    before = {p: p.read_bytes() for p in (stage1 / "tags.jsonl", images / "cat.jpg")}
    for out in (stage1 / "tags.jsonl", images / "cat.jpg", tmp_path / "link.html",
                images / ".." / "stage1" / "tags.jsonl", stage1):
        proc = run("make_report.py", "--tags", stage1, "--img-root", images, "--dataset", "voc2007", "--out", out)
        assert refused(proc, str(out)), (out, proc.stderr)
    assert {p: p.read_bytes() for p in before} == before


@pytest.mark.parametrize("tool, args", [
    ("gen_tags.py", ["--dataset", "voc2007", "--pretrained", "/nonexistent.pt"]),
    ("gen_pseudo_masks.py", ["--dataset", "voc2012", "--pretrained", "/nonexistent.pt", "--tags", "TAGS"]),
])
def test_stages_refuse_an_out_folder_over_their_inputs(run_folders, tool, args):
    tmp_path, images, _ = run_folders
    tags = images / "tags.txt"
    tags.write_text("cat cat\n")
    args = [str(tags) if a == "TAGS" else a for a in args]
    assert refused(run(tool, "--img-root", images, *args, "--out", images), "--out is the --img-root input")
    split = tmp_path / "split.txt"
    split.write_text("cat cat\n")
    holder = [*args, "--split", tags] if tool == "gen_tags.py" else args  # an input file inside --out
    proc = run(tool, "--img-root", tmp_path / "stage1", *holder, "--out", images)
    assert refused(proc, "holds the", str(tags)), proc.stderr
    assert sorted(p.name for p in images.iterdir()) == ["cat.jpg", "tags.txt"]


def test_prepare_data_split_refuses_an_existing_file_in_its_input(tmp_path):
    voc = tmp_path / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    listing = voc / "ImageSets" / "Main" / "test.txt"
    listing.write_text("000001\n")
    proc = run("prepare_data.py", "voc-split", "--voc-root", voc, "--out", listing)
    assert refused(proc, "would replace a file inside the --voc-root folder"), proc.stderr
    assert listing.read_text() == "000001\n"


def test_stage3_work_dir_never_holds_its_config(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    config = work / "cfg.py"  # mmengine dumps the config into the work dir under its own name
    config.write_text("x = 1\n")
    masks = tmp_path / "masks"
    masks.mkdir()
    proc = run("train_seg.py", config, "--pseudo-masks", masks, "--work-dir", work)
    assert refused(proc, "--work-dir holds the config input"), proc.stderr
    assert config.read_text() == "x = 1\n"


@pytest.mark.parametrize("tool, args", [
    ("gen_tags.py", ["--img-root", "IMAGES", "--dataset", "voc2007", "--out", ""]),
    ("make_random_weights.py", ["--out", ""]),
    ("prepare_data.py", ["coco-masks", "--instances", "ANNOTATION", "--out", ""]),
    ("prepare_data.py", ["voc-split", "--voc-root", "IMAGES", "--out", ""]),
    ("eval_masks.py", ["--pred", "IMAGES", "--gt", "IMAGES", "--dataset", "voc2012", "--out", ""]),
    ("train_seg.py", ["CONFIG", "--pseudo-masks", "IMAGES", "--work-dir", ""]),
    ("test_seg.py", ["CONFIG", "ANNOTATION", "--work-dir", ""]),
    ("make_report.py", ["--tags", "IMAGES", "--img-root", "IMAGES", "--dataset", "voc2007", "--out", ""]),
])
def test_an_empty_output_path_is_refused(run_folders, tool, args):
    tmp_path, images, _ = run_folders
    (tmp_path / "cfg.py").write_text("x = 1\n")
    (tmp_path / "ann.json").write_text("{}")
    named = {"IMAGES": images, "CONFIG": tmp_path / "cfg.py", "ANNOTATION": tmp_path / "ann.json"}
    proc = run(tool, *[named.get(a, a) for a in args])
    assert refused(proc, "'': name an output"), proc.stderr


def test_resolved_paths_are_compared(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (tmp_path / "alias").symlink_to(images)
    with pytest.raises(UserError, match="is the --img-root input"):
        check_outputs_spare_inputs({"img_root": str(images), "out": str(tmp_path / "alias")})
    with pytest.raises(UserError, match="is the --img-root input"):
        check_outputs_spare_inputs({"img_root": str(images), "out": str(images / "sub" / "..")})
    check_outputs_spare_inputs({"img_root": str(images), "out": str(tmp_path / "out")})  # beside it: fine
    check_outputs_spare_inputs({"img_root": str(images), "out": str(images / "new.html")}, out_is_folder=False)
    check_outputs_spare_inputs({"pretrained": "openai", "out": "openai"})  # a tag, not a file
