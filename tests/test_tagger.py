"""TagCLIP steps against straightforward re-computations from the published method."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tagclip_cls.tagging.tagclip as tagclip_module
from tagclip_cls.core.vit import attention, embed, project_tokens, resized_pos_embed
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig, global_clip_scores, select_tags

from test_boxes import reference_box_mask

C, K = 7, 5  # text classes (5 targets + 2 background words)


@pytest.fixture(scope="module")
def text(tiny_clip):
    g = torch.Generator().manual_seed(1)
    return F.normalize(torch.randn(C, tiny_clip.model.text_projection.shape[1], generator=g), dim=-1)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 3, 5 * 16, 7 * 16, generator=g)


def reference_forward(clip, images):
    """Every layer through nn.MultiheadAttention's own weights output, head-averaged."""
    visual = clip.visual
    x = embed(visual, images)
    maps = []
    blocks = visual.transformer.resblocks
    for i, block in enumerate(blocks):
        h = block.ln_1(x)
        out, w = block.attn(h, h, h, need_weights=True, average_attn_weights=True)
        maps.append(w)
        if i == len(blocks) - 1:
            t = x.shape[1]
            mask = torch.full((t, t), -100.0).fill_diagonal_(0.0)
            out, _ = block.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + out
        x = x + block.mlp(block.ln_2(x))
    return project_tokens(visual, x), maps


def test_attention_matches_multihead_attention(tiny_clip):
    block = tiny_clip.visual.transformer.resblocks[3]
    x = torch.randn(2, 11, 128)
    ours, probs = attention(block.attn, x)
    ref, ref_probs = block.attn(x, x, x, need_weights=True)
    assert torch.allclose(ours, ref, atol=1e-5) and torch.allclose(probs, ref_probs, atol=1e-6)


def test_fused_attention_matches_multihead_attention(tiny_clip, monkeypatch):
    """The fused path (scaled_dot_product_attention) against nn.MultiheadAttention, with the
    per-image additive key mask that CWR uses; it returns no probabilities and is really taken."""
    block = tiny_clip.visual.transformer.resblocks[3]
    x = torch.randn(2, 11, 128)
    bias = torch.zeros(2, 1, 11, 11)
    bias[0, 0, 0, 5:] = -1000.0
    ours, probs = attention(block.attn, x, bias, need_probs=False, fused=True)
    ref = torch.stack([block.attn(x[b:b + 1], x[b:b + 1], x[b:b + 1], attn_mask=bias[b, 0], need_weights=False)[0][0]
                       for b in range(2)])
    assert probs is None and torch.allclose(ours, ref, atol=1e-5)
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    attention(block.attn, x, bias, need_probs=False, fused=True)
    attention(block.attn, x, bias, need_probs=True, fused=True)  # probabilities asked for: explicit
    assert len(calls) == 1


def test_self_only_attention_keeps_each_token_to_itself(tiny_clip):
    attn = tiny_clip.visual.transformer.resblocks[0].attn
    x = torch.randn(1, 6, 128)
    out, probs = attention(attn, x, self_only=True)
    v = F.linear(x, attn.in_proj_weight[256:], attn.in_proj_bias[256:])
    assert torch.allclose(out, attn.out_proj(v), atol=1e-5)
    _, plain = attention(attn, x)
    assert torch.allclose(probs, plain)  # recorded probabilities are those before the mask


def test_dense_forward_against_reference(tiny_clip, text, images):
    tagger = TagCLIP(tiny_clip, text, K, TagConfig(round_fp16_pos=False))
    probs, votes, avg = tagger.dense_forward(images)
    feats, maps = reference_forward(tiny_clip, images)
    ref_probs = (tiny_clip.model.logit_scale.exp() * F.normalize(feats[:, 1:], dim=-1) @ text.T).softmax(-1)
    assert torch.allclose(probs, ref_probs, atol=1e-5)
    maps = [m[:, 1:, 1:] for m in maps]
    ref_votes = sum((m > m.mean(dim=(1, 2), keepdim=True)).int() for m in maps)
    assert torch.equal(votes.int(), ref_votes)
    assert torch.allclose(avg, (maps[8] + maps[9] + maps[10]) / 3, atol=1e-6)  # L-4..L-2 of 12


def test_refine_applies_vote_mask_then_box_masks(tiny_clip, text):
    grid = (5, 6)
    n = 30
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(n, C, generator=g).pow(4).softmax(-1)
    avg = torch.rand(n, n, generator=g).pow(6)
    votes = torch.randint(0, 8, (n, n), generator=g)
    out = TagCLIP(tiny_clip, text, K).refine(probs, votes, avg, grid)
    attn = avg * (votes >= 4)
    first = attn @ probs
    partial = 0
    for c in range(C):
        column = first[:, c]
        norm = ((column - column.min()) / (column.max() - column.min())).reshape(grid).numpy()
        mask = torch.from_numpy(reference_box_mask(norm, float(np.float32(norm.mean())))).reshape(-1)
        partial += int(0 < mask.sum() < n)
        # bit for bit on a CPU: one class at a time, the published product (not one for all classes)
        assert torch.equal(out[:, c], ((attn * mask[None]) @ probs[:, c:c + 1])[:, 0]), c
    assert partial >= 3  # the boxes really cut keys away for several classes


@pytest.mark.parametrize("grid", [(1, 1), (1, 7), (5, 6), (23, 31)])
def test_class_box_keys_are_the_published_column_by_column_masks(grid, monkeypatch):
    """All classes at once, bit for bit what the published loop computes for each column: min-max
    scaling, its torch mean as a float32 threshold, scoremap2bbox; columns that are nowhere
    positive are left out."""
    n = grid[0] * grid[1]
    g = torch.Generator().manual_seed(n)
    # offsets per column: the minimum matters to the scaling
    refined = torch.rand(n, 9, generator=g).pow(3) @ torch.rand(9, 12, generator=g) + 3 * torch.rand(12, generator=g)
    refined[:, 4] = 0  # nowhere positive: no box, left out
    thresholds = []
    real_boxes = tagclip_module.score_map_box_masks
    monkeypatch.setattr(tagclip_module, "score_map_box_masks",
                        lambda maps, t: thresholds.append(t) or real_boxes(maps, t))
    classes, keys = tagclip_module.class_box_keys(refined, grid)
    assert thresholds[0].dtype == np.float32  # a float32 product with the quantised peak, as published
    assert keys.shape == (n, len(classes)) and keys.dtype == torch.float32
    assert classes == [c for c in range(12) if c != 4]
    for j, c in enumerate(classes):
        column = refined[:, c]
        norm = (column - column.min()) / (column.max() - column.min())  # the published column scaling
        if n == 1:  # 0 / 0: the published code stops on int(NaN); here the column gets no box
            assert torch.isnan(norm).all() and not keys[:, j].any()
            continue
        expected = reference_box_mask(norm.reshape(grid).numpy(), np.float32(norm.mean().item()))
        assert torch.equal(keys[:, j], torch.from_numpy(expected.reshape(-1))), c
    if min(grid) > 1:  # (on one row every box is clamped away)
        assert 0 < keys.sum() < keys.numel()  # boxes that cut something away


def test_select_tags_threshold_and_fallback():
    assert select_tags(np.array([0.1, 0.6, 0.35, 0.9]), 0.5) == [1, 3]
    assert select_tags(np.array([0.2, 0.2, 0.2]), 0.5) == [0]  # nothing strictly above: arg-max
    assert select_tags(np.array([0.0, 0.05, 0.2]), 0.1) == [1, 2]


def test_cwr_stops_at_first_empty_box(tiny_clip, text):
    grid = (4, 5)
    n = 20
    tagger = TagCLIP(tiny_clip, text, K)
    refined = torch.full((n, C), 0.01)
    refined[7, 0] = 1.0                        # class 0: one cell at row 1, col 2 -> box rows 1:2, cols 2:3
    refined[19, 1] = 1.0                       # class 1: bottom-right cell -> clamped box is empty
    refined[0, 2] = 1.0                        # class 2 would be fine, but CWR stopped at class 1
    local = refined[:, :K].max(dim=0).values
    image = torch.randn(3, 64, 80)
    classes, crops, masks = tagger.cwr_crops(image, refined, local, grid)
    assert classes == [0]
    assert crops[0].shape == (3, 224, 224) and masks[0].shape == (14, 14)
    expected = F.interpolate(image[None, :, 16:32, 32:48], size=(224, 224), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(crops[0], expected, atol=1e-5)
    assert masks[0].sum() == 196


def test_cwr_candidates_use_threshold_of_whole_matrix(tiny_clip, text):
    """Three plausible rules give three different candidate sets here: min/max over the whole
    N x C matrix (0 + 0.5 * 1.0 = 0.5 -> classes 0, 2), over the target columns only
    (0.45 -> 0, 1, 2) and over the local scores (0.2 + 0.5 * 0.7 = 0.55 -> 0)."""
    grid = (4, 5)
    tagger = TagCLIP(tiny_clip, text, K)
    refined = torch.zeros(20, C)
    for c, (cell, value) in enumerate([(6, 0.9), (7, 0.48), (8, 0.52), (11, 0.2), (12, 0.2)]):
        refined[cell, c] = value  # one cell per class, inside the clamped grid: non-empty boxes
    refined[0, 6] = 1.0  # a background column sets the maximum
    local = refined[:, :K].max(dim=0).values
    image = torch.randn(3, 64, 80)
    classes, crops, masks = tagger.cwr_crops(image, refined, local, grid)
    assert classes == [0, 2]
    assert [float(m.sum()) for m in masks] == [196.0, 196.0]  # a one-cell box is all inside
    expected = F.interpolate(image[None, :, 16:32, 48:64], size=(224, 224), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(crops[1], expected, atol=1e-5)  # class 2: cell 8 = row 1, column 3


def test_masked_class_token_matches_multihead_attention_with_mask(tiny_clip, text):
    """CWR forward: every layer ordinary except -1000 on the class-token row outside the mask."""
    tagger = TagCLIP(tiny_clip, text, K)
    crops = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    masks = torch.zeros(2, 14, 14)
    masks[0, 3:9, 2:12] = 1
    masks[1, 10:, :5] = 1
    ours = tagger.masked_class_probs(crops, masks)
    visual = tiny_clip.visual
    expected = []
    for crop, mask in zip(crops, masks):
        bias = torch.zeros(197, 197)
        bias[0, 1:] = (1 - mask.flatten()) * -1000.0
        x = embed(visual, crop[None])
        for block in visual.transformer.resblocks:
            h = block.ln_1(x)
            x = x + block.attn(h, h, h, attn_mask=bias, need_weights=False)[0]
            x = x + block.mlp(block.ln_2(x))
        cls = project_tokens(visual, x)[:, 0]
        logits = tiny_clip.model.logit_scale.exp() * F.normalize(cls, dim=-1) @ text.T
        expected.append(logits.softmax(-1)[0])
    assert torch.allclose(ours, torch.stack(expected), atol=1e-6)


def test_batched_equals_one_by_one(tiny_clip, text, images):
    tagger = TagCLIP(tiny_clip, text, K)
    together = tagger.score(images)
    for i in range(len(images)):
        alone = tagger.score(images[i:i + 1])[0]
        assert np.allclose(alone.scores, together[i].scores, atol=1e-6)
        assert alone.tags == together[i].tags


def test_switches_coarse_dmar_tagclip(tiny_clip, text, images):
    coarse = TagCLIP(tiny_clip, text, K, TagConfig(dmar=False, cwr=False)).score(images[:1])[0]
    probs, votes, avg = TagCLIP(tiny_clip, text, K).dense_forward(images[:1])
    assert np.allclose(coarse.scores, probs[0, :, :K].max(dim=0).values.numpy(), atol=1e-7)
    dmar = TagCLIP(tiny_clip, text, K, TagConfig(cwr=False)).score(images[:1])[0]
    refined = TagCLIP(tiny_clip, text, K).refine(probs[0], votes[0], avg[0], (5, 7))
    assert np.allclose(dmar.scores, refined[:, :K].max(dim=0).values.numpy(), atol=1e-7)
    assert not np.allclose(dmar.scores, coarse.scores, atol=1e-4)  # DMAR changed them
    with pytest.raises(ValueError):
        TagConfig(dmar=False, cwr=True)


def test_cwr_fusion_against_a_hand_value(tiny_clip, text, images, monkeypatch):
    """s[c] = 0.5 * s[c] + 0.5 * g[c] for the re-identified classes, the others unchanged."""
    tagger = TagCLIP(tiny_clip, text, K)
    dmar = TagCLIP(tiny_clip, text, K, TagConfig(cwr=False)).score(images[:1])[0]
    probs, votes, avg = tagger.dense_forward(images[:1])
    refined = tagger.refine(probs[0], votes[0], avg[0], (5, 7))
    classes, _, _ = tagger.cwr_crops(images[0], refined, refined[:, :K].max(dim=0).values, (5, 7))
    assert classes  # CWR re-identifies something here
    g = torch.linspace(0.1, 0.7, C)
    monkeypatch.setattr(tagger, "masked_class_probs", lambda crops, masks: g.expand(len(crops), C))
    full = tagger.score(images[:1])[0]
    expected = dmar.scores.copy()
    expected[classes] = 0.5 * dmar.scores[classes] + 0.5 * g.numpy()[classes]
    assert np.allclose(full.scores, expected, atol=1e-7)


def test_fp16_positional_quirk(tiny_clip, text, images, monkeypatch):
    visual = tiny_clip.visual
    exact = resized_pos_embed(visual, (5, 7))
    rounded = resized_pos_embed(visual, (5, 7), round_fp16=True)
    assert torch.equal(rounded, exact.half().float()) and not torch.equal(rounded, exact)
    native = tuple(visual.grid_size)
    assert torch.equal(resized_pos_embed(visual, native), visual.positional_embedding)
    seen = []
    real = tagclip_module.embed
    monkeypatch.setattr(tagclip_module, "embed", lambda v, x, r=False: seen.append(r) or real(v, x, r))
    TagCLIP(tiny_clip, text, K).dense_forward(images[:1])  # resized grid: rounded by default
    TagCLIP(tiny_clip, text, K, TagConfig(round_fp16_pos=False)).dense_forward(images[:1])
    TagCLIP(tiny_clip, text, K).dense_forward(torch.randn(1, 3, *(s * 16 for s in native)))  # native: never
    assert seen == [True, False, False]


@pytest.mark.parametrize("shape, size", [((3, 16, 48), (224, 224)), ((3, 96, 32), (224, 224)), ((2, 5, 7), (3, 11))])
def test_resize_bilinear_matches_interpolate(shape, size):
    from tagclip_cls.tagging.tagclip import resize_bilinear
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    assert torch.allclose(resize_bilinear(x, size), expected, atol=1e-5)  # weights rounded differently


def test_global_baseline_is_open_clips_encode_image_and_follows_the_precision(tiny_clip, text, images):
    """fp32: the class-token softmax of open_clip's own encode_image; bf16 runs under autocast."""
    views = F.interpolate(images, size=(224, 224), mode="bicubic", align_corners=False)
    with torch.no_grad():
        feats = F.normalize(tiny_clip.model.encode_image(views), dim=-1)
    reference = (tiny_clip.model.logit_scale.exp() * feats @ text[:K].T).softmax(-1).numpy()
    ours = global_clip_scores(tiny_clip, text, images, K)
    assert np.allclose(ours, reference, atol=1e-6)
    low = global_clip_scores(tiny_clip, text, images, K, precision="bf16")
    assert not np.array_equal(low, ours) and np.allclose(low, reference, atol=0.05)
