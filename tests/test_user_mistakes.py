"""User mistakes in stages 1 and 2 end in one line (exit 2) before any model loads, and write nothing."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent


def run_tool(tool: str, args: list, monkeypatch, capsys) -> tuple[int, str]:
    path = str(ROOT / "tools" / tool)
    monkeypatch.setattr(sys, "argv", [path, *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(path, run_name="__main__")
    return exc.value.code, capsys.readouterr().err


@pytest.fixture()
def inputs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "cat.jpg", (40, 50))
    tags = tmp_path / "tags.txt"
    tags.write_text("cat cat\n")
    return tmp_path, images, tags


def stage_args(stage: int, images: Path, tags: Path) -> tuple[str, list]:
    if stage == 1:
        return "gen_tags.py", ["--img-root", images, "--dataset", "voc2007", "--pretrained", "/nonexistent.pt"]
    return "gen_pseudo_masks.py", ["--img-root", images, "--tags", tags, "--dataset", "voc2012",
                                   "--pretrained", "/nonexistent.pt"]


@pytest.mark.parametrize("stage", [1, 2])
@pytest.mark.parametrize("mistake, extra, message", [
    ("out is a file", [], "--out names an existing file"),
    ("device gpu", ["--device", "gpu"], "--device 'gpu'"),
    ("device cuda", ["--device", "cuda"], "GPU here; use --device cpu"),
    ("tf32 on a cpu", ["--precision", "tf32"], "--precision tf32: TensorFloat-32 is a GPU's"),
    ("bom and crlf", [], None),
])
def test_one_line_errors(inputs, monkeypatch, capsys, stage, mistake, extra, message):
    tmp_path, images, tags = inputs
    out = tmp_path / "out"
    if mistake == "out is a file":
        out.write_text("precious")
    if mistake == "device cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    if mistake == "bom and crlf":  # a split/tags file from Windows: fine; it reaches the (missing) checkpoint
        tags.write_bytes(b"\xef\xbb\xbfcat cat\r\n")
        message = "/nonexistent.pt: checkpoint not found"
    tool, args = stage_args(stage, images, tags)
    if mistake == "bom and crlf" and stage == 1:
        args += ["--split", tags]
    code, err = run_tool(tool, [*args, *extra, "--out", out], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["images", "tags.txt"] + (["out"] if mistake == "out is a file" else []))


@pytest.mark.parametrize("record", [b"", b"{not json", b"\xff\xfe"])
def test_damaged_run_config_is_a_one_line_error(inputs, tiny_checkpoint, monkeypatch, capsys, record):
    tmp_path, images, _ = inputs
    parts = tmp_path / "out" / "parts"
    parts.mkdir(parents=True)
    (parts / "run_config.json").write_bytes(record)
    code, err = run_tool("gen_tags.py", ["--img-root", images, "--dataset", "voc2007", "--pretrained", tiny_checkpoint,
                                         "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out"], monkeypatch, capsys)
    assert code == 2 and "the record is damaged" in err and err.count("\n") == 1, err
    code, err = run_tool("gen_tags.py", ["--img-root", images, "--dataset", "voc2007", "--pretrained", tiny_checkpoint,
                                         "--cache-dir", tmp_path / "cache", "--out", tmp_path / "out", "--overwrite",
                                         "--no-progress"], monkeypatch, capsys)
    assert code == 0, err


def test_more_than_254_classes_refused_in_stage_2(inputs, monkeypatch, capsys):
    tmp_path, images, tags = inputs
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"class{i}\n" for i in range(500)))
    tags.write_text("cat class266\n")
    unreadable = tmp_path / "unreadable.pt"  # refused only when loaded: the class count is checked first
    unreadable.write_bytes(b"not a checkpoint")
    code, err = run_tool("gen_pseudo_masks.py", ["--img-root", images, "--tags", tags, "--classes", classes,
                                                 "--pretrained", unreadable, "--out", tmp_path / "out"],
                         monkeypatch, capsys)
    assert code == 2 and "at most 254 classes" in err and not (tmp_path / "out").exists(), err


def test_missing_dependency_is_a_one_line_hint(tmp_path):
    """A tool run by a Python without the project's dependencies says how to get them."""
    import subprocess

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_tags.py"), "--img-root", str(tmp_path),
                             "--dataset", "voc2007", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                            env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "'torch' is missing: run `make install`" in result.stderr
