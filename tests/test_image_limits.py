"""Resource limits hold before decoding: an image of too many pixels is refused from its header
(a 60 KB PNG can claim 20000 x 20000), ``--max-pixels`` moves the limit, and running out of
memory on one image skips that image, never the run."""
from __future__ import annotations

import json
import runpy
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import pytest
from PIL import ImageFile

from conftest import write_image
from tagclip_cls.core import images as images_module
from tagclip_cls.core.images import DEFAULT_MAX_PIXELS, load_image, prepare_image, read_image_size
from tagclip_cls.runtime.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def huge_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of ``width x height`` zeros, written row by row (tens of KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pack = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the row's bits
    data = b"".join(pack.compress(row) for _ in range(height)) + pack.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return huge_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 20_000, 20_000)


@pytest.fixture()
def no_decoding(monkeypatch):
    def refuse(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_the_bomb_is_small_on_disk_and_over_the_default(bomb):
    assert bomb.stat().st_size < 200_000 and 20_000 * 20_000 > DEFAULT_MAX_PIXELS


def test_too_many_pixels_are_refused_from_the_header(bomb, no_decoding):
    tracemalloc.start()
    try:
        for read in (read_image_size, load_image, lambda path: prepare_image(path, 16)):
            with pytest.raises(UserError, match=f"^{bomb}: image of 20000 x 20000 = 400000000 pixels, more than "
                                                f"the {DEFAULT_MAX_PIXELS} allowed"):
                read(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


def test_max_pixels_moves_the_limit(bomb, tmp_path):
    # above PIL's own limit (179 million): only the header is read, so nothing is decoded here
    assert read_image_size(bomb, max_pixels=400_000_000) == (20_000, 20_000)
    with pytest.raises(UserError, match="more than the 399999999 allowed"):
        read_image_size(bomb, max_pixels=399_999_999)
    small = write_image(tmp_path / "small.png", (40, 50))
    with pytest.raises(UserError, match=f"^{small}: image of 50 x 40 = 2000 pixels, more than the 1999 allowed"):
        load_image(small, max_pixels=1999)
    assert load_image(small, max_pixels=2000).size == (50, 40)


# --- through the tools ------------------------------------------------------------------

def run_tool(tool: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [tool, *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "tools" / tool), run_name="__main__")
    captured = capsys.readouterr()
    return exc.value.code, captured.out + captured.err


@pytest.fixture()
def inputs(tmp_path, tiny_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (40, 56), seed=1)  # 2240 pixels
    write_image(images / "b.png", (48, 48), seed=2)  # 2304 pixels
    tags = tmp_path / "tags.txt"
    tags.write_text("a cat\nb dog\n")
    common = ["--img-root", str(images), "--dataset", "voc2012", "--pretrained", tiny_checkpoint,
              "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--log-level", "WARNING"]
    return images, tags, common


def stage1(common: list[str], out: Path, monkeypatch, capsys, *extra: str) -> tuple[int, str, dict[str, str], list]:
    code, text = run_tool("gen_tags.py", [*common, "--out", str(out), *extra], monkeypatch, capsys)
    skipped = dict(line.split("\t", 1) for line in (out / "skipped.txt").read_text().splitlines()) \
        if (out / "skipped.txt").is_file() else {}
    tagged = [json.loads(line)["id"] for line in (out / "tags.jsonl").read_text().splitlines()] \
        if (out / "tags.jsonl").is_file() else []
    return code, text, skipped, tagged


def stage2(common: list[str], tags: Path, out: Path, monkeypatch, capsys, *extra: str) -> tuple[int, str, list]:
    code, text = run_tool("gen_pseudo_masks.py", [*common, "--tags", str(tags), "--out", str(out), *extra],
                          monkeypatch, capsys)
    written = sorted(p.stem for p in (out / "masks").glob("*.png")) if (out / "masks").is_dir() else []
    return code, text, written


def test_tools_skip_a_bomb_by_its_header(inputs, bomb, tmp_path, monkeypatch, capsys):
    images, tags, common = inputs
    (images / "c.png").write_bytes(bomb.read_bytes())
    tags.write_text("a cat\nb dog\nc cat\n")
    real_load = ImageFile.ImageFile.load  # the good images decode...

    def load_small_only(self):
        assert self.size[0] * self.size[1] < 10_000, "the bomb was decoded"
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_small_only)  # ...and the bomb never does
    code, text, skipped, tagged = stage1(common, tmp_path / "tags_out", monkeypatch, capsys)
    assert code == 0, text
    assert tagged == ["a", "b"] and list(skipped) == ["c"] and "20000 x 20000" in skipped["c"], skipped
    code, text, written = stage2(common, tags, tmp_path / "masks_out", monkeypatch, capsys)
    assert code == 0 and written == ["a", "b"], text
    assert "2 images computed, 0 already done, 1 failed (c)" in text and "20000 x 20000" in text


def test_tools_take_max_pixels(inputs, tmp_path, monkeypatch, capsys):
    _, tags, common = inputs
    code, text, skipped, tagged = stage1(common, tmp_path / "tags_out", monkeypatch, capsys, "--max-pixels", "2300")
    assert code == 0 and tagged == ["a"] and list(skipped) == ["b"], text
    assert "2304 pixels, more than the 2300 allowed" in skipped["b"]
    code, text, written = stage2(common, tags, tmp_path / "masks_out", monkeypatch, capsys, "--max-pixels", "2300")
    assert code == 0 and written == ["a"] and "1 failed (b)" in text, text
    code, text, written = stage2(common, tags, tmp_path / "masks_out2", monkeypatch, capsys, "--max-pixels", "2304")
    assert code == 0 and written == ["a", "b"], text


def _out_of_memory_for(size_hw: tuple[int, int], monkeypatch, target, name: str) -> None:
    """Make ``target.name`` raise numpy's kind of MemoryError for images of ``size_hw`` (H, W)."""
    real = getattr(target, name)

    def failing(*args, **kwargs):
        img = next(a for a in args if hasattr(a, "size") and hasattr(a, "mode"))
        if (img.height, img.width) == size_hw:
            raise MemoryError("Unable to allocate 645. MiB for an array with shape (13000, 13000)")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, failing)


def test_out_of_memory_while_decoding_skips_that_image(inputs, tmp_path, monkeypatch, capsys):
    _, tags, common = inputs
    _out_of_memory_for((48, 48), monkeypatch, images_module, "to_clip_tensor")
    code, text, skipped, tagged = stage1(common, tmp_path / "tags_out", monkeypatch, capsys)
    assert code == 0 and tagged == ["a"] and list(skipped) == ["b"], text
    assert "out of memory" in skipped["b"]
    code, text, written = stage2(common, tags, tmp_path / "masks_out", monkeypatch, capsys)
    assert code == 0 and written == ["a"] and "1 failed (b)" in text, text
    code, text, _, _ = stage1(common, tmp_path / "strict_out", monkeypatch, capsys, "--strict")
    assert code == 2 and text.strip().splitlines() == [f"error: {Path(common[1]) / 'b.png'}: out of memory while "
                                                      f"decoding the image"], text


def test_out_of_memory_while_tagging_skips_that_image(inputs, tmp_path, monkeypatch, capsys):
    from tagclip_cls.tagging.api import Tagger

    _, _, common = inputs
    real = Tagger.tag_batch

    def tag_batch(self, images):
        if any(tuple(t.shape[1:]) == (48, 48) for t in images):
            raise MemoryError("Unable to allocate 645. MiB")
        return real(self, images)

    monkeypatch.setattr(Tagger, "tag_batch", tag_batch)
    code, text, skipped, tagged = stage1(common, tmp_path / "tags_out", monkeypatch, capsys)
    assert code == 0 and tagged == ["a"] and list(skipped) == ["b"], text
    assert skipped["b"].startswith("b: out of memory at 48x48 in a batch of 1")


def test_raised_max_pixels_reaches_every_check(inputs, bomb, tmp_path, monkeypatch, capsys):
    """With --max-pixels above its size the bomb passes the header checks of the planning and of
    the loading (its decoding is then made to run out of memory here: 400 million pixels)."""
    images, tags, common = inputs
    (images / "c.png").write_bytes(bomb.read_bytes())
    tags.write_text("a cat\nb dog\nc cat\n")
    real_load = ImageFile.ImageFile.load

    def load(self):
        if self.size == (20_000, 20_000):
            raise MemoryError("Unable to allocate 381. MiB")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    code, text, skipped, tagged = stage1(common, tmp_path / "tags_out", monkeypatch, capsys,
                                         "--max-pixels", "400000000")
    assert code == 0 and tagged == ["a", "b"] and skipped == {"c": f"{images / 'c.png'}: out of memory while "
                                                                   f"decoding the image"}, text
    code, text, written = stage2(common, tags, tmp_path / "masks_out", monkeypatch, capsys,
                                 "--max-pixels", "400000000")
    assert code == 0 and written == ["a", "b"] and "out of memory while decoding" in text, text


@pytest.mark.parametrize("threads", ["0", "2"])
def test_out_of_memory_while_writing_stage2_outputs_skips_that_image(inputs, tmp_path, monkeypatch, capsys, threads):
    """The label map is made at full size in the writer (a thread with --loader-threads 2)."""
    import wsss.masks.run as mask_run

    _, tags, common = inputs
    real = mask_run.label_map

    def label_map(cams, *args, **kwargs):
        if cams.shape[1:] == (48, 48):
            raise MemoryError("Unable to allocate 645. MiB")
        return real(cams, *args, **kwargs)

    monkeypatch.setattr(mask_run, "label_map", label_map)
    out = tmp_path / "masks_out"
    code, text, written = stage2(common, tags, out, monkeypatch, capsys, "--loader-threads", threads)
    assert code == 0 and written == ["a"], text
    assert "1 images computed, 0 already done, 1 failed (b)" in text and "b: out of memory while writing" in text
    assert sorted(p.name for p in (out / "cams").iterdir()) == ["a.npz"]  # b is computed again by a rerun


def test_out_of_memory_in_the_crf_step_skips_that_image(inputs, tmp_path, monkeypatch, capsys):
    import wsss.masks.crf as crf_module

    _, tags, common = inputs
    real = crf_module.as_pil

    def as_pil(path, *args, **kwargs):
        if Path(path).stem == "b":
            raise MemoryError("Unable to allocate 645. MiB")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(crf_module, "as_pil", as_pil)
    out = tmp_path / "masks_out"
    code, text, written = stage2(common, tags, out, monkeypatch, capsys, "--crf", "--crf-backend", "pydensecrf")
    assert code == 0 and written == ["a", "b"], text
    assert sorted(p.name for p in (out / "masks_crf").iterdir()) == ["a.png"]
    assert "1 failed (b)" in text and "b.png: out of memory in the CRF" in text, text
