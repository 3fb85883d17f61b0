"""A real SIGKILL in the middle of stage 1, of stage 2's CAMs and of its CRF phase: the rerun's
outputs are byte-identical to an uninterrupted run, no partial output is left, and no CRF worker
outlives its parent. A kill between a write's temporary file and its rename leaves that file
(hidden, ``.NAME.XXXXXXXXXXXX.tmp``): never read as an output, so not compared."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
NUM_IMAGES = 10


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    images = root / "images"
    images.mkdir()
    for i in range(NUM_IMAGES):
        write_image(images / f"img{i:02d}.jpg", (96 + 8 * i, 128), seed=i)
    tags = root / "tags.txt"
    tags.write_text("".join(f"img{i:02d} cat person\n" for i in range(NUM_IMAGES)))
    return root, images, tags


def files(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, by path; the temporary files of writes cut short left out."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not re.fullmatch(r"\..+\.[0-9a-f]{12}\.tmp", p.name)}


def children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_when(cmd: list[str], ready, timeout: float = 240) -> set[int]:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` holds; returns the pids of its children then."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"finished before the kill: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "never reached the kill point"
        time.sleep(0.05)
    kids = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return kids


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_stage1_killed_then_resumed(inputs, tmp_path, tiny_checkpoint):
    root, images, _ = inputs
    base = [sys.executable, str(ROOT / "tools" / "gen_tags.py"), "--img-root", str(images), "--dataset", "voc2007",
            "--pretrained", tiny_checkpoint, "--cache-dir", str(root / "cache"), "--no-progress"]
    run([*base, "--out", str(tmp_path / "whole")])
    part = tmp_path / "killed" / "parts" / "rank-0-of-1.jsonl"
    kill_when([*base, "--out", str(tmp_path / "killed")],
              lambda: part.is_file() and part.read_text().count("\n") >= 2)
    assert not (tmp_path / "killed" / "tags.jsonl").exists()
    run([*base, "--out", str(tmp_path / "killed")])
    whole, resumed = files(tmp_path / "whole"), files(tmp_path / "killed")
    for name in ("tags.jsonl", "tags.txt"):
        assert resumed[name] == whole[name]
    assert not [n for n in resumed if n.endswith(".tmp")]


@pytest.mark.parametrize("phase", ["cams", "crf"])
def test_stage2_killed_then_resumed(inputs, tmp_path, tiny_checkpoint, phase):
    root, images, tags = inputs
    base = [sys.executable, str(ROOT / "tools" / "gen_pseudo_masks.py"), "--img-root", str(images), "--tags",
            str(tags), "--dataset", "voc2012", "--pretrained", tiny_checkpoint, "--cache-dir", str(root / "cache"),
            "--crf", "--crf-workers", "2", "--no-progress"]
    run([*base, "--out", str(tmp_path / "whole")])
    killed = tmp_path / "killed"
    folder = killed / ("cams" if phase == "cams" else "masks_crf")
    kids = kill_when([*base, "--out", str(killed)],
                     lambda: folder.is_dir() and len(list(folder.glob("*.*"))) >= 2)
    if phase == "crf":
        assert len(list((killed / "masks_crf").glob("*.png"))) < NUM_IMAGES  # really stopped in the middle
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in kids if alive(pid)], "CRF workers outlived the killed run"
    run([*base, "--out", str(killed)])
    resumed = files(killed)
    assert resumed == files(tmp_path / "whole")
    assert not [n for n in resumed if ".tmp" in n or Path(n).name.startswith(".")]
