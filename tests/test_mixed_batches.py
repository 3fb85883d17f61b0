"""Stage 1 with images of different sizes in one batch: padded, masked, and equal to one by one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tagclip_cls.core.vit as vit_module
import tagclip_cls.tagging.tagclip as tagclip_module
from tagclip_cls.core.presets import make_preset
from tagclip_cls.core.vit import pad_tokens
from tagclip_cls.formats.tags import TagFolder
from tagclip_cls.tagging.api import Tagger
from tagclip_cls.core.batches import ImageEntry, default_batching, plan_batches
from tagclip_cls.tagging.resumable import tag_images
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig, global_clip_scores

from conftest import write_image
from test_tagger import C, K, text  # noqa: F401  (text: the same random class embeddings, a fixture)

ROOT = Path(__file__).resolve().parent.parent
# (7, 4) is the tallest grid and (3, 9) the widest, neither the largest; (6, 6) has the most tokens
GRIDS = [(5, 7), (7, 4), (3, 9), (6, 6), (4, 4), (14, 14)]
CONFIGS = {"tagclip": TagConfig(), "dmar": TagConfig(cwr=False), "coarse": TagConfig(dmar=False, cwr=False)}


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(5)
    return [torch.randn(3, gh * 16, gw * 16, generator=g) for gh, gw in GRIDS]


def test_pad_tokens_layout_and_mask():
    seqs = [torch.randn(1, n, 4) for n in (3, 5, 2)]
    x, mask = pad_tokens(seqs)
    assert x.shape == (3, 5, 4) and mask.shape == (3, 1, 1, 5)
    for b, seq in enumerate(seqs):
        n = seq.shape[1]
        assert torch.equal(x[b, :n], seq[0]) and not x[b, n:].any()
        assert not mask[b, ..., :n].any() and torch.isneginf(mask[b, ..., n:]).all()
    assert pad_tokens(seqs, torch.bfloat16)[1].dtype == torch.bfloat16
    same = [torch.randn(1, 4, 4) for _ in range(2)]
    x, mask = pad_tokens(same)
    assert mask is None and torch.equal(x, torch.cat(same))  # one length: nothing to mask


#: batch against alone, for one token count: 7.5e-9 measured (one float32 ulp of a 0.12 score, on
#: the second image; AMD EPYC AVX-512 at default settings and ATEN_CPU_CAPABILITY=default, 0 under
#: =avx2): a batched matrix product may be blocked unlike a single one. 1e-6 is 130 such ulps, and
#: what the padded batches of this file are held to.
BATCH_TOLERANCE = 1e-6


def test_grids_of_one_token_count_share_a_pass_without_mask(tiny_clip, text, monkeypatch):
    """4 x 6 and 6 x 4 (as VOC's 24 x 32 and 32 x 24): one pass with no key mask, tags as alone and
    scores within :data:`BATCH_TOLERANCE` (not bit for bit: see there)."""
    g = torch.Generator().manual_seed(7)
    images = [torch.randn(3, 64, 96, generator=g), torch.randn(3, 96, 64, generator=g)]
    tagger = TagCLIP(tiny_clip, text, K)
    passes = []
    encode = tagger._encode
    monkeypatch.setattr(tagger, "_encode", lambda x, mask, lengths: passes.append((len(x), mask)) or encode(x, mask, lengths))
    together = tagger.score(images)
    assert [(n, m) for n, m in passes] == [(2, None)]
    for image, joint in zip(images, together):
        alone = tagger.score(image[None])[0]
        assert alone.tags == joint.tags
        assert np.abs(alone.scores - joint.scores).max() <= BATCH_TOLERANCE
        assert np.abs(alone.refined - joint.refined).max() <= BATCH_TOLERANCE


def test_dense_forward_mixed_equals_each_image_alone(tiny_clip, text, images):
    """Probabilities, votes and averaged attention over each image's own grid: padding enters
    no layer mean, vote or average. The votes are counts, compared exactly: a vote flips only
    where an attention entry ties its layer's mean, and none did on any CPU kind measured (Intel
    AVX-512 with AMX; AMD EPYC AVX-512 under every ATEN_CPU_CAPABILITY; the AVX2-only AMD EPYC)."""
    tagger = TagCLIP(tiny_clip, text, K)
    probs, votes, avg = tagger.dense_forward_mixed(images)
    for b, image in enumerate(images):
        p, v, a = tagger.dense_forward(image[None])
        n = GRIDS[b][0] * GRIDS[b][1]
        assert probs[b].shape == (n, C) and votes[b].shape == avg[b].shape == (n, n)
        assert torch.allclose(probs[b], p[0], atol=1e-6)
        assert torch.equal(votes[b], v[0])
        assert torch.allclose(avg[b], a[0], atol=1e-7)


@pytest.mark.parametrize("name", CONFIGS)
def test_mixed_batch_scores_equal_one_by_one(tiny_clip, text, images, name, monkeypatch):
    tagger = TagCLIP(tiny_clip, text, K, CONFIGS[name])
    alone = [tagger.score(image[None])[0] for image in images]
    crop_batches = []
    real = tagger.masked_class_probs
    monkeypatch.setattr(tagger, "masked_class_probs", lambda crops, masks: crop_batches.append(len(crops))
                        or real(crops, masks))
    together = tagger.score(images)
    for a, b in zip(alone, together):
        assert a.tags == b.tags
        assert np.abs(a.scores - b.scores).max() < 1e-5
        assert a.refined.shape == b.refined.shape and np.abs(a.refined - b.refined).max() < 1e-5
    if name == "tagclip":  # the crops of several images of different sizes went through one pass
        assert len(crop_batches) == 1
        assert sum(not np.array_equal(r.scores, r.local_scores) for r in together) >= 2


def test_padding_content_never_reaches_real_tokens(tiny_clip, text, images, monkeypatch):
    """Garbage instead of zeros in the padded tokens changes nothing: the mask, not the zeros,
    keeps padding out."""
    tagger = TagCLIP(tiny_clip, text, K)
    clean = tagger.score(images)

    def noisy_pad(sequences, mask_dtype=torch.float32):
        x, mask = pad_tokens(sequences, mask_dtype)
        padded = torch.isneginf(mask[:, 0, 0])
        x[padded] = 50 * torch.randn(int(padded.sum()), x.shape[2], generator=torch.Generator().manual_seed(0))
        return x, mask
    monkeypatch.setattr(vit_module, "pad_tokens", noisy_pad)  # as embed_padded calls it
    for a, b in zip(clean, tagger.score(images)):
        assert a.tags == b.tags and np.abs(a.scores - b.scores).max() < 1e-6


def test_one_size_takes_no_padding_path(tiny_clip, text, images, monkeypatch):
    """A batch of one, or of one size, is the plain batched pass, bit for bit."""
    tagger = TagCLIP(tiny_clip, text, K)
    reference = [tagger.score(image[None])[0] for image in images[:2]]
    same = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(6))
    stacked = tagger.score(same)

    def refuse(*args, **kwargs):
        raise AssertionError("padding path taken")
    monkeypatch.setattr(tagclip_module, "embed_padded", refuse)
    for image, expected in zip(images, reference):
        got = tagger.score([image])[0]
        assert np.array_equal(got.scores, expected.scores) and np.array_equal(got.refined, expected.refined)
    for got, expected in zip(tagger.score(list(same)), stacked):
        assert np.array_equal(got.scores, expected.scores)


def test_global_baseline_accepts_mixed_sizes(tiny_clip, text, images):
    together = global_clip_scores(tiny_clip, text, images, K)
    alone = np.concatenate([global_clip_scores(tiny_clip, text, image[None], K) for image in images])
    assert np.allclose(together, alone, atol=1e-6)


def sized_entries(folder, sizes):
    entries = []
    for i, size in enumerate(sizes):
        entries.append(ImageEntry(f"im{i}", write_image(folder / f"im{i}.png", size, seed=i)))
    return entries


def test_plan_batches_mixed_sorts_by_tokens_exact_groups_by_grid(tmp_path):
    # grids at patch 16: (5, 7) (4, 4) (7, 4) (5, 7) (3, 9) (4, 4); tokens 35 16 28 35 27 16
    entries = sized_entries(tmp_path, [(80, 112), (64, 64), (112, 64), (70, 100), (48, 144), (60, 60)])
    mixed, _ = plan_batches(entries, 16, None, 4, strict=True, batching="mixed")
    assert [[e.image_id for e in b.entries] for b in mixed] == [["im1", "im5", "im4", "im2"], ["im0", "im3"]]
    exact, _ = plan_batches(entries, 16, None, 4, strict=True)
    assert [[e.image_id for e in b.entries] for b in exact] == [["im0", "im3"], ["im1", "im5"], ["im2"], ["im4"]]
    assert plan_batches(entries, 16, None, 4, strict=True, batching="grid")[0] == exact


def test_runner_mixed_batches_equal_batch_one(tmp_path, tiny_clip):
    sizes = [(70, 90), (83, 61), (64, 100), (64, 100), (150, 40), (40, 170), (100, 100)]
    entries = sized_entries(tmp_path, sizes)
    tagger = Tagger(tiny_clip, make_preset(classes=["cat", "person", "rocket", "cup", "horse"],
                                           background=["sky", "grass"]), cache_dir=tmp_path / "cache")
    outputs = {}
    for name, batch_size, batching in (("one", 1, "grid"), ("mixed", 4, "mixed")):
        tag_images(tagger, entries, tmp_path / name, {"test": 1}, batch_size, progress=False, batching=batching)
        outputs[name] = [json.loads(line) for line in (tmp_path / name / "tags.jsonl").read_text().splitlines()]
    assert [r["id"] for r in outputs["mixed"]] == [e.image_id for e in entries]  # input order
    part = (tmp_path / "mixed" / "parts" / "rank-0-of-1.jsonl").read_text().splitlines()
    assert len(part) == 2  # 7 images of 6 grids in two passes
    for a, b in zip(outputs["one"], outputs["mixed"]):
        assert a["tags"] == b["tags"] and max(abs(x - y) for x, y in zip(a["scores"], b["scores"])) < 1e-5


def test_default_batching_by_device():
    assert default_batching("cpu") == "grid"
    assert default_batching("cuda") == default_batching("cuda:1") == "mixed"


def test_gen_tags_mixed_batching_equals_one_by_one_and_shards_alike(tmp_path, tiny_checkpoint):
    """``tools/gen_tags.py --batching mixed``: tags as one by one, scores within 1e-5, the choice
    recorded with the run; 2 torchrun ranks write what one process writes."""
    root = tmp_path / "images"
    root.mkdir()
    for i, size in enumerate([(70, 90), (83, 61), (64, 100), (150, 40), (40, 170), (100, 100), (64, 100)]):
        write_image(root / f"im{i}.png", size, seed=i)
    (tmp_path / "classes.txt").write_text("cat\nperson\nrocket\ncoffee cup\nhorse\n")
    args = ["tools/gen_tags.py", "--img-root", str(root), "--classes", str(tmp_path / "classes.txt"),
            "--pretrained", tiny_checkpoint, "--cache-dir", str(tmp_path / "cache"), "--log-level", "WARNING",
            "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {"one": [], "mixed": ["--batching", "mixed", "--batch-size", "4"]}
    for name, extra in runs.items():
        proc = subprocess.run([sys.executable, *args, *extra, "--out", str(tmp_path / name)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29537", *args,
                           *runs["mixed"], "--out", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    records = {name: [json.loads(line) for line in (tmp_path / name / "tags.jsonl").read_text().splitlines()]
               for name in ("one", "mixed")}
    assert len(records["one"]) == 7
    for a, b in zip(records["one"], records["mixed"]):
        assert a["id"] == b["id"] and a["tags"] == b["tags"]
        assert max(abs(x - y) for x, y in zip(a["scores"], b["scores"])) < 1e-5
    assert json.loads(TagFolder(tmp_path / "mixed").run_config.read_text())["batching"] == "mixed"
    assert json.loads(TagFolder(tmp_path / "one").run_config.read_text())["batching"] == "grid"  # the CPU default
    for name in ("tags.jsonl", "tags.txt"):
        assert (tmp_path / "mixed" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
