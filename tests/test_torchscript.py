"""TorchScript weight archives are read as data: same tags and masks as a state dict, nothing of
the archive runs, and sizes are checked before anything is inflated."""
from __future__ import annotations

import io
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch
from open_clip.model import build_model_from_openai_state_dict

from conftest import write_image
from tagclip_cls import Tagger
from tagclip_cls.core.models import load_clip, read_state_dict
from tagclip_cls.core.torchscript import MAX_METADATA_BYTES, read_torchscript_state_dict
from tagclip_cls.runtime.errors import UserError
from wsss import MaskGenerator

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["cat", "person", "rocket", "cup"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_state_dict) -> tuple[Path, Path]:
    """The tiny CLIP traced whole (image and text towers), as OpenAI's archives hold it, and the
    same tensors saved as a plain state dict."""
    model = build_model_from_openai_state_dict(dict(tiny_state_dict), cast_dtype=torch.float32).float().eval()
    model.output_dict = False
    side = model.visual.grid_size[0] * model.visual.patch_size[0]
    traced = torch.jit.trace(model, (torch.randn(1, 3, side, side), torch.zeros(1, 77, dtype=torch.long)),
                             check_trace=False)
    folder = tmp_path_factory.mktemp("jit")
    torch.jit.save(traced, str(folder / "traced_clip.pt"))
    torch.save(model.state_dict(), folder / "state_dict.pt")
    return folder / "traced_clip.pt", folder / "state_dict.pt"


@pytest.fixture(scope="module")
def traced_checkpoint(checkpoints) -> Path:
    return checkpoints[0]


def test_state_dict_is_torchs_own(traced_checkpoint):
    """Every parameter and buffer, with torch's own loader as the reference (it runs the archive,
    which is safe here: the test made it)."""
    ours = read_torchscript_state_dict(traced_checkpoint)
    reference = torch.jit.load(str(traced_checkpoint), map_location="cpu").state_dict()
    assert sorted(ours) == sorted(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key


def test_traced_clip_tags_and_masks_like_its_state_dict(checkpoints, tmp_path):
    image = write_image(tmp_path / "photo.png", (70, 90), seed=3)
    runs = {}
    for name, path in zip(("jit", "state_dict"), checkpoints):
        tagger = Tagger.from_pretrained(str(path), classes=CLASSES, cache_dir=tmp_path / name)
        masks = MaskGenerator.from_tagger(tagger)
        tags = tagger(image)
        runs[name] = (tags, masks(image, tags=list(tags.tags) or [0]))
    (jit_tags, jit_masks), (sd_tags, sd_masks) = runs["jit"], runs["state_dict"]
    assert jit_tags.tags == sd_tags.tags and np.array_equal(jit_tags.scores, sd_tags.scores)
    assert np.array_equal(jit_masks.cams, sd_masks.cams) and np.array_equal(jit_masks.label_map, sd_masks.label_map)


class _Hostile(torch.nn.Module):
    """Writes into ``target`` when TorchScript restores it."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.written = torch.zeros(6, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return self.target, self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.target = state[0]
        self.weight = state[1]
        self.training = state[2]
        # kept as an attribute: TorchScript drops a write to a tensor that nothing reads
        self.written = torch.from_file(state[0], shared=True, size=6, dtype=torch.uint8).fill_(88)


def test_hostile_archive_runs_nothing(tmp_path):
    target = tmp_path / "outside.txt"
    archive = tmp_path / "hostile.pt"
    torch.jit.script(_Hostile(str(target))).save(str(archive))
    target.write_bytes(b"intact")
    # the archive does what it says when torch.jit.load restores it (in another process)
    probe = tmp_path / "probe.txt"
    probe.write_bytes(b"intact")
    hostile_probe = tmp_path / "probe.pt"
    torch.jit.script(_Hostile(str(probe))).save(str(hostile_probe))
    subprocess.run([sys.executable, "-c", f"import torch; torch.jit.load({str(hostile_probe)!r})"], check=True,
                   capture_output=True)
    assert probe.read_bytes() == b"XXXXXX"
    # ours refuses it in one line and leaves the target as it was
    with pytest.raises(UserError, match="__setstate__") as exc:
        load_clip(None, str(archive))
    assert "\n" not in str(exc.value) and str(archive) in str(exc.value)
    assert target.read_bytes() == b"intact"


def test_hostile_archive_through_the_tool(tmp_path):
    target = tmp_path / "outside.txt"
    target.write_bytes(b"intact")
    archive = tmp_path / "hostile.pt"
    torch.jit.script(_Hostile(str(target))).save(str(archive))
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (40, 40))
    proc = subprocess.run([sys.executable, "tools/gen_tags.py", "--img-root", str(images), "--dataset", "voc2007",
                           "--pretrained", str(archive), "--out", str(tmp_path / "out"), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "__setstate__" in proc.stderr
    assert target.read_bytes() == b"intact"


def _archive_with(tmp_path: Path, data_pkl: bytes, extra: dict[str, bytes] | None = None,
                  compress: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "crafted.pt"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in {"archive/data.pkl": data_pkl, "archive/code/__torch__/m.py": b"class M(Module):\n"
                              b"  __parameters__ = [\"w\", ]\n  __buffers__ = []\n", **(extra or {})}.items():
            archive.writestr(name, content, zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)
    return path


def test_unknown_globals_are_refused(tmp_path):
    class Call:
        def __reduce__(self):
            return (print, ("ran",))
    path = _archive_with(tmp_path, pickle.dumps(Call(), protocol=2))
    with pytest.raises(UserError, match=r"asks for (__builtin__|builtins)\.print") as exc:
        read_state_dict(path)
    assert "\n" not in str(exc.value)


class _Global:
    """``GLOBAL module name`` in a hand-written pickle."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _Reduce:
    def __init__(self, func, args):
        self.func, self.args = func, args


class _Build:
    def __init__(self, cls, state):
        self.cls, self.state = cls, state


def _hand_pickle(obj) -> bytes:
    """A protocol-2 pickle of nested ``_Global`` / ``_Reduce`` / ``_Build`` / persistent ids /
    tuples / dicts / ints / strings, written opcode by opcode, as TorchScript writes its module
    tree (``pickle`` itself cannot name a class that does not exist here)."""
    out = io.BytesIO()
    out.write(b"\x80\x02")

    def put(o):
        if isinstance(o, _Global):
            out.write(b"c" + o.module.encode() + b"\n" + o.name.encode() + b"\n")
        elif isinstance(o, _Reduce):
            put(o.func)
            put(tuple(o.args))
            out.write(b"R")
        elif isinstance(o, _Build):
            put(o.cls)
            out.write(b")\x81")  # EMPTY_TUPLE NEWOBJ
            put(o.state)
            out.write(b"b")  # BUILD
        elif isinstance(o, tuple) and o and o[0] == "__persistent__":
            put(o[1])
            out.write(b"Q")  # BINPERSID
        elif isinstance(o, tuple):
            out.write(b"(")
            for item in o:
                put(item)
            out.write(b"t")
        elif isinstance(o, dict):
            out.write(b"}(")
            for k, v in o.items():
                put(k)
                put(v)
            out.write(b"u")
        elif isinstance(o, bool):
            out.write(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            out.write(b"J" + o.to_bytes(4, "little", signed=True))
        elif isinstance(o, str):
            data = o.encode()
            out.write(b"X" + len(data).to_bytes(4, "little") + data)
        else:
            raise TypeError(o)
    put(obj)
    out.write(b".")
    return out.getvalue()


def _module_pickle(numel: int) -> bytes:
    """``data.pkl`` of a module ``M`` whose parameter ``w`` holds ``numel`` float32 values in storage 0."""
    storage = ("__persistent__", ("storage", _Global("torch", "FloatStorage"), "0", "cpu", numel))
    tensor = _Reduce(_Global("torch._utils", "_rebuild_tensor_v2"),
                     (storage, 0, (numel,), (1,), False, _Reduce(_Global("collections", "OrderedDict"), ())))
    return _hand_pickle(_Build(_Global("__torch__.m", "M"), {"w": tensor}))


def test_hand_made_archive_reads(tmp_path):
    """The crafted layout the next tests damage is itself read correctly."""
    values = torch.arange(4, dtype=torch.float32)
    path = _archive_with(tmp_path, _module_pickle(4), {"archive/data/0": values.numpy().tobytes()})
    assert torch.equal(read_state_dict(path)["w"], values)


def test_compressed_storage_is_refused_before_inflating(tmp_path):
    """A small file claiming a large storage: refused from the zip directory, in one line."""
    numel = (MAX_METADATA_BYTES + 4) // 4
    path = _archive_with(tmp_path, _module_pickle(numel), {"archive/data/0": bytes(4 * numel)},
                         compress=("archive/data/0",))
    assert path.stat().st_size < MAX_METADATA_BYTES // 100
    with pytest.raises(UserError, match="would inflate") as exc:
        read_state_dict(path)
    assert "\n" not in str(exc.value)
    small = _archive_with(tmp_path, _module_pickle(4), {"archive/data/0": bytes(16)}, compress=("archive/data/0",))
    with pytest.raises(UserError, match="compressed"):  # tensor data is never compressed, whatever its size
        read_state_dict(small)


def test_storage_size_must_match_its_claim(tmp_path):
    path = _archive_with(tmp_path, _module_pickle(1000), {"archive/data/0": bytes(16)})
    with pytest.raises(UserError, match="not the 4000 stored bytes") as exc:
        read_state_dict(path)
    assert "\n" not in str(exc.value)


def test_plain_checkpoint_zip_is_checked_before_torch_load(tmp_path, tiny_state_dict):
    """A ``torch.save`` zip with a deflated 100 MB member: refused before torch inflates it."""
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("plain/data/99", bytes(MAX_METADATA_BYTES + 1), zipfile.ZIP_DEFLATED)
    with pytest.raises(UserError, match="would inflate"):
        read_state_dict(path)


def test_no_code_runs_from_any_weights_file():
    """The library never calls ``torch.jit.load``, and every ``torch.load`` is weights-only."""
    sources = [p for folder in ("tagclip_cls", "wsss", "tools") for p in (ROOT / folder).rglob("*.py")]
    for source in sources:
        text = source.read_text(encoding="utf-8")
        assert "jit.load(" not in text, source
        for call in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
            assert "weights_only=True" in call.group(0), f"{source}: {call.group(0)}"
