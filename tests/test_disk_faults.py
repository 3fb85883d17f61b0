"""A full (ENOSPC) or read-only (EROFS) disk: every writing tool ends in one line naming the path
and the error, leaves no temporary or partial file, and the text cache (an optimisation) only warns.

Tests run as root here, where a 0o555 folder does not stop writes, so both faults are simulated:
for files under one folder, a read-only disk refuses creating files and folders, a full one
refuses writing bytes (through ``os.fdopen``, which every atomic write uses, and ``open``).
"""
from __future__ import annotations

import builtins
import errno
import logging
import os
import runpy
import sys
import threading
from pathlib import Path

import pytest

from tagclip_cls.runtime.atomic_io import atomic_write, write_text_atomic
from tagclip_cls.runtime.errors import UserError, WriteError
from tagclip_cls.runtime.overlap import BackgroundWriter
from conftest import write_image

ROOT = Path(__file__).resolve().parents[1]
FAULTS = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system"}


class _FullFile:
    """A file whose writes fail as on a full disk (everything else passes through)."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _under(path, root: Path) -> bool:
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(root.resolve())
    except (TypeError, ValueError):
        return False


def simulate_disk_fault(monkeypatch, root: Path, code: int) -> None:
    """Make writes under ``root`` fail with ``code`` (``ENOSPC`` or ``EROFS``)."""
    real_open, real_mkdir, real_fdopen, real_builtin_open = os.open, os.mkdir, os.fdopen, builtins.open

    def fault(path):
        return OSError(code, os.strerror(code), os.fsdecode(path))

    def fake_open(path, flags, *args, **kwargs):
        if code == errno.EROFS and flags & os.O_CREAT and _under(path, root):
            raise fault(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if code == errno.EROFS and _under(path, root) and not os.path.isdir(path):
            raise fault(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return _FullFile(f) if code == errno.ENOSPC and _under(os.readlink(f"/proc/self/fd/{fd}"), root) else f

    def fake_builtin_open(path, mode="r", *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and _under(path, root) and any(c in mode for c in "wax+"):
            if code == errno.EROFS:
                raise fault(path)
            return _FullFile(real_builtin_open(path, mode, *args, **kwargs))
        return real_builtin_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "fdopen", fake_fdopen)
    monkeypatch.setattr(builtins, "open", fake_builtin_open)


def leftovers(folder: Path) -> list[Path]:
    """Temporary or partial files left behind."""
    return [p for p in folder.rglob("*") if p.is_file() and (p.name.startswith(".") or p.suffix == ".tmp")]


def run_tool(tool: str, args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", [tool, *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "tools" / tool), run_name="__main__")
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.mark.parametrize("code", FAULTS)
def test_atomic_write_names_the_target_and_leaves_no_temp_file(tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    out.mkdir()
    simulate_disk_fault(monkeypatch, out, code)
    with pytest.raises(WriteError) as exc:
        write_text_atomic(out / "masks" / "a.txt", "x" * 100)
    assert str(exc.value) == f"{out / 'masks' / 'a.txt'}: {FAULTS[code]}"
    assert isinstance(exc.value, UserError) and isinstance(exc.value, OSError) and exc.value.errno == code
    assert list(out.rglob("*")) == ([out / "masks"] if code == errno.ENOSPC else [])


def test_atomic_write_failing_rename_removes_the_temp_file(tmp_path, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError, match=f"^{tmp_path / 'a.bin'}: No space left on device$"):
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"123"), mode="wb")
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_keep_their_type(tmp_path):
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "a.txt", lambda f: (_ for _ in ()).throw(ValueError("bug")))
    assert list(tmp_path.iterdir()) == []


def test_background_writer_reports_one_disk_fault_once(caplog):
    """Every writer thread fails on a full disk: one error goes up, the repeats are not logged as errors."""
    submitted = threading.Event()

    def job(i):
        submitted.wait(10)  # all four fail together, after the last submit
        raise WriteError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"out/{i}.png")

    with caplog.at_level("DEBUG"), pytest.raises(WriteError, match="out/0.png: No space left on device"):
        with BackgroundWriter(threads=2, backlog=8) as writer:
            for i in range(4):
                writer.submit(job, i)
            submitted.set()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert len([r for r in caplog.records if "write failed" in r.getMessage()]) == 3


@pytest.fixture()
def stage_inputs(tmp_path, tiny_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    for i, size in enumerate([(40, 56), (48, 48)]):
        write_image(images / f"im{i}.png", size, seed=i)
    tags = tmp_path / "tags.txt"
    tags.write_text("im0 cat\nim1 dog person\n")
    return images, tags, tiny_checkpoint


def _one_error_line(err: str, path: Path, code: int, caplog) -> None:
    """Exactly one line on stderr: ``error: PATH...: strerror`` (no log warnings or errors either)."""
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}") and lines[0].endswith(f": {FAULTS[code]}"), err


@pytest.mark.parametrize("code", FAULTS)
@pytest.mark.parametrize("where", ["", "parts/rank-0-of-1.jsonl"])
def test_gen_tags_on_a_faulty_disk(stage_inputs, tmp_path, monkeypatch, capsys, caplog, code, where):
    """The whole --out (its first write: the run's settings), or only the part file of finished batches."""
    images, _, checkpoint = stage_inputs
    out = tmp_path / "out"
    (out / where).parent.mkdir(parents=True, exist_ok=True)
    simulate_disk_fault(monkeypatch, out / where, code)
    status, _, err = run_tool("gen_tags.py", [
        "--img-root", str(images), "--dataset", "voc2012", "--pretrained", checkpoint, "--cache-dir",
        str(tmp_path / "cache"), "--out", str(out), "--no-progress", "--log-level", "WARNING"], monkeypatch, capsys)
    assert status == 2
    _one_error_line(err, out / where, code, caplog)
    assert leftovers(out) == []


@pytest.mark.parametrize("code", FAULTS)
@pytest.mark.parametrize("where", ["", "cams", "masks"])
def test_gen_pseudo_masks_on_a_faulty_disk(stage_inputs, tmp_path, monkeypatch, capsys, caplog, code, where):
    images, tags, checkpoint = stage_inputs
    out = tmp_path / "out"
    (out / where).mkdir(parents=True, exist_ok=True)
    simulate_disk_fault(monkeypatch, out / where, code)
    status, _, err = run_tool("gen_pseudo_masks.py", [
        "--img-root", str(images), "--tags", str(tags), "--dataset", "voc2012", "--pretrained", checkpoint,
        "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress", "--log-level", "WARNING",
        "--loader-threads", "2"], monkeypatch, capsys)  # the outputs written by background threads
    assert status == 2
    _one_error_line(err, out / where, code, caplog)
    assert leftovers(out) == []


@pytest.mark.parametrize("code", FAULTS)
def test_make_random_weights_on_a_faulty_disk(tmp_path, monkeypatch, capsys, caplog, code):
    out = tmp_path / "weights"
    out.mkdir()
    simulate_disk_fault(monkeypatch, out, code)
    status, stdout, err = run_tool("make_random_weights.py", [
        "--out", str(out), "--vision-layers", "1", "--vision-width", "64"], monkeypatch, capsys)
    assert status == 2 and stdout == ""
    _one_error_line(err, out / "random_vit_l1_w64_p16_seed0.pt", code, caplog)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("code", FAULTS)
@pytest.mark.parametrize("default_cache", [True, False])
@pytest.mark.parametrize("tool", ["gen_tags.py", "gen_pseudo_masks.py"])
def test_text_cache_on_a_faulty_disk_warns_once(stage_inputs, tmp_path, monkeypatch, capsys, caplog, code,
                                                 default_cache, tool):
    images, tags, checkpoint = stage_inputs
    cache = tmp_path / "cache"
    cache.mkdir()
    simulate_disk_fault(monkeypatch, cache, code)
    args = ["--img-root", str(images), "--dataset", "voc2012", "--pretrained", checkpoint,
            "--out", str(tmp_path / "out"), "--no-progress", "--log-level", "WARNING"]
    if tool == "gen_pseudo_masks.py":
        args += ["--tags", str(tags)]
    if default_cache:
        monkeypatch.setenv("TAGCLIP_CACHE", str(cache))
    else:
        args += ["--cache-dir", str(cache / "text")]
    status, _, err = run_tool(tool, args, monkeypatch, capsys)
    assert status == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(warnings) == 1 and "text cache" in warnings[0] and FAULTS[code] in warnings[0], warnings
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_text_cache_write_failing_inside_torch_save_only_warns(tiny_clip, tmp_path, monkeypatch, caplog):
    """torch.save reports some failed writes as RuntimeError (its zip writer): a warning too."""
    import torch

    from tagclip_cls.core.text import text_embeddings

    def failing_save(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with caplog.at_level("WARNING"):
        emb = text_embeddings(tiny_clip, ["cat"], ["a {}."], cache_dir=tmp_path / "cache")
    assert emb.shape == (1, 64)
    assert [r.getMessage() for r in caplog.records if "text cache" in r.getMessage()] and len(caplog.records) == 1
    assert "PytorchStreamWriter failed writing file" in caplog.text
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
