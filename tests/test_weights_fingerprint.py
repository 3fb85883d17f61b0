"""Weights replaced under the same path, with the same size and modification time, are noticed by
both stages and by the pipeline: the run records keep a fingerprint of the weights' content."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import write_image
from test_user_mistakes import run_tool
from tagclip_cls.core.models import load_clip
from tagclip_cls.runtime.errors import UserError
from wsss.apps.pipeline import PipelineOptions, run_pipeline


def replace_keeping_size_and_time(path: Path, state_dict: dict[str, torch.Tensor], key: str) -> None:
    """Write ``state_dict`` with the tensor ``key`` scaled by 1.5 over ``path``: same size, and the
    modification time copied back (as ``touch -r`` does)."""
    stat = path.stat()
    changed = dict(state_dict)
    changed[key] = state_dict[key] * 1.5
    torch.save(changed, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns


@pytest.fixture()
def setup(tmp_path, tiny_state_dict):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", (48, 64), seed=1)
    weights = tmp_path / "weights.pt"
    torch.save(tiny_state_dict, weights)
    tags = tmp_path / "tags.txt"
    tags.write_text("a cat\n")
    common = ["--pretrained", weights, "--cache-dir", tmp_path / "cache", "--no-progress", "--log-level", "WARNING"]
    return tmp_path, images, weights, tags, common


def test_fingerprint_covers_both_towers(tiny_state_dict, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(tiny_state_dict, path)
    first = load_clip(None, str(path))
    for key in ("visual.transformer.resblocks.3.mlp.c_fc.weight", "token_embedding.weight"):
        replace_keeping_size_and_time(path, tiny_state_dict, key)
        assert load_clip(None, str(path)).weights_fingerprint != first.weights_fingerprint, key
    torch.save(tiny_state_dict, path)
    assert load_clip(None, str(path)).weights_fingerprint == first.weights_fingerprint


def test_stage1_notices_a_changed_image_tower(setup, tiny_state_dict, monkeypatch, capsys):
    tmp_path, images, weights, _, common = setup
    args = ["--img-root", images, "--dataset", "voc2007", *common, "--out", tmp_path / "out"]
    assert run_tool("gen_tags.py", args, monkeypatch, capsys)[0] == 0
    replace_keeping_size_and_time(weights, tiny_state_dict, "visual.transformer.resblocks.5.attn.in_proj_weight")
    code, text = run_tool("gen_tags.py", args, monkeypatch, capsys)
    assert code == 2 and "other weights" in text and text.count("\n") == 1, text


def test_stage2_notices_replaced_weights(setup, tiny_state_dict, monkeypatch, capsys):
    tmp_path, images, weights, tags, common = setup
    args = ["--img-root", images, "--tags", tags, "--dataset", "voc2012", *common, "--out", tmp_path / "out"]
    assert run_tool("gen_pseudo_masks.py", args, monkeypatch, capsys)[0] == 0
    masks = (tmp_path / "out" / "masks" / "a.png").read_bytes()
    cams = (tmp_path / "out" / "cams" / "a.npz").read_bytes()
    replace_keeping_size_and_time(weights, tiny_state_dict, "visual.transformer.resblocks.10.attn.in_proj_weight")
    code, text = run_tool("gen_pseudo_masks.py", args, monkeypatch, capsys)
    assert code == 2 and "other weights" in text and text.count("\n") == 1, text
    assert (tmp_path / "out" / "masks" / "a.png").read_bytes() == masks
    code, text = run_tool("gen_pseudo_masks.py", [*args, "--overwrite"], monkeypatch, capsys)
    assert code == 0 and (tmp_path / "out" / "cams" / "a.npz").read_bytes() != cams, text  # recomputed


def test_pipeline_compares_before_skipping_a_complete_stage(setup, tiny_state_dict):
    tmp_path, images, weights, _, _ = setup
    opts = PipelineOptions(img_root=str(images), out=str(tmp_path / "run"), dataset="voc2012",
                           pretrained=str(weights), cache_dir=str(tmp_path / "cache"), crf_masks=False, progress=False)
    run_pipeline(opts)
    replace_keeping_size_and_time(weights, tiny_state_dict, "visual.conv1.weight")
    with pytest.raises(UserError, match="other weights"):
        run_pipeline(opts)
