"""CLIP-ES CAM steps against hand-computed cases, and one forward for all tags against one per tag."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagclip_cls.core.text import encode_prompts
from tagclip_cls.core.vit import embed
from wsss.masks.cams import CAM_TEMPLATE, CamConfig, ClipES, grad_cam, grad_cam_on_device, minmax, refine_with_affinity, sinkhorn_transition
from wsss.masks.label_maps import LabelSpace, label_map
from tagclip_cls.core.presets import load_preset


def test_sinkhorn_one_round_by_hand():
    a = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    # columns sum to (2, 1, 2): [[.5,0,0],[.5,1,0],[0,0,1]]; rows then sum to (.5, 1.5, 1):
    # [[1,0,0],[1/3,2/3,0],[0,0,1]]; symmetrised:
    expected = torch.tensor([[1.0, 1 / 6, 0.0], [1 / 6, 2 / 3, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(sinkhorn_transition(a, rounds=1), expected)


def test_sinkhorn_three_rounds_columns_then_rows():
    a = torch.tensor([[4.0, 1.0, 2.0], [1.0, 3.0, 1.0], [2.0, 2.0, 5.0]], dtype=torch.float64)
    t = a.numpy().copy()
    for _ in range(3):
        t = t / t.sum(axis=0, keepdims=True)
        t = t / t.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(sinkhorn_transition(a).numpy(), (t + t.T) / 2, rtol=1e-12)
    # rows end exactly normalised before symmetrising, so the result is nearly doubly stochastic
    np.testing.assert_allclose(sinkhorn_transition(a).sum(0).numpy(), 1.0, atol=5e-3)


def test_refinement_squares_and_masks_columns():
    trans = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    cams = torch.tensor([[1.0, 0.2]])
    masks = torch.tensor([[1.0, 0.0]])
    # (T @ T) = T; masking column 1 leaves [[.5, 0], [.5, 0]] @ [1, .2] = [.5, .5]
    torch.testing.assert_close(refine_with_affinity(trans, cams, masks), torch.tensor([[0.5, 0.5]]))
    gen = torch.Generator().manual_seed(0)
    t, c, m = torch.rand(300, 300, generator=gen), torch.rand(3, 300, generator=gen), (torch.rand(3, 300, generator=gen) > 0.5).float()
    expected = torch.stack([((t @ t) * m[k][None, :]) @ c[k] for k in range(3)])
    assert torch.equal(refine_with_affinity(t, c, m), expected)  # on a CPU one tag at a time: the published bits


def test_minmax_uses_published_epsilon():
    out = minmax(np.array([[1.0, 3.0], [2.0, 1.0]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 2 / (2 + 1e-7)], [1 / (2 + 1e-7), 0.0]], rtol=1e-7)


def test_background_rule_by_hand():
    cams = np.array([[[0.3, 0.8]], [[0.5, 0.1]]], np.float32)  # 2 tags, 1 x 2 pixels
    # background = 1 - max = (0.5, 0.2): pixel 0 ties background and tag 1 -> background first
    labels = label_map(cams, [4, 9], LabelSpace.from_preset(load_preset("voc2012")))
    np.testing.assert_array_equal(labels, [[0, 5]])


@pytest.fixture(scope="module")
def texts(tiny_clip):
    names = ["cat", "dog", "bird avian", "car"]
    text = encode_prompts(tiny_clip, names + ["sky", "grass", "road"], [CAM_TEMPLATE])
    return text[:4], text[4:]


def _reference_grad_cam(clip, class_text, bg_text, image, tags, tag):
    """One full forward per tag, Grad-CAM through a hook on the last block's ln_1 output."""
    visual = clip.visual
    blocks = visual.transformer.resblocks
    captured = {}

    def hook(_module, _inputs, output):  # the frozen model needs a leaf to take gradients at
        captured["acts"] = output.detach().requires_grad_(True)
        return captured["acts"]

    handle = blocks[-1].ln_1.register_forward_hook(hook)
    try:
        with torch.no_grad():
            x = embed(visual, image[None], True)
            for block in blocks[:-1]:
                x = block(x)
        y = blocks[-1](x)
        feat = F.normalize(visual.ln_post(y)[:, 1:].mean(1) @ visual.proj, dim=-1)
        text = torch.cat([class_text[list(tags)], bg_text])
        scores = (clip.model.logit_scale.exp() * feat @ text.T).softmax(-1)[0]
        scores[list(tags).index(tag)].backward()
    finally:
        handle.remove()
    acts, grads = captured["acts"][0, 1:].detach(), captured["acts"].grad[0, 1:]
    cam = (acts @ grads.mean(0)).clamp_min(0)
    for _ in range(2):  # pytorch-grad-cam's per-layer and aggregate normalisations
        cam = cam - cam.min()
        cam = cam / (1e-7 + cam.max())
    return cam


def test_grad_cam_on_device_equals_the_published_numpy_computation():
    """The GPU's path (one product for all tags, run here on CPU tensors) against the numpy
    computation of pytorch-grad-cam that the CPU keeps."""
    g = torch.Generator().manual_seed(4)
    grid = (4, 6)
    acts = torch.randn(24, 16, generator=g)
    grads = torch.randn(3, 24, 16, generator=g)
    grads[1] = -grads[1].abs()  # a tag whose weighted sum is mostly negative: the ReLU matters
    expected = grad_cam(acts, grads, grid)
    got = grad_cam_on_device(acts, grads, grid)
    assert got.shape == expected.shape == (3, 4, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert (expected == 0).any() and expected.max() > 0.99


@pytest.mark.parametrize("grad_mode", ["loop", "batched"])
def test_one_forward_for_all_tags_equals_one_forward_per_tag(tiny_clip, texts, grad_mode):
    torch.manual_seed(0)
    image = torch.randn(3, 48, 80)
    tags = [0, 2, 3]
    gen = ClipES(tiny_clip, *texts, CamConfig(grad_mode=grad_mode))
    x, _, _ = gen.trunk(image[None])
    (cams,), _ = gen.grad_cams(x, [tags], [(3, 5)])
    for k, tag in enumerate(tags):
        ref = _reference_grad_cam(tiny_clip, *texts, image, tags, tag).reshape(3, 5)
        np.testing.assert_allclose(cams[k], ref.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("grad_mode", ["loop", "batched"])
def test_a_batch_of_images_equals_each_image_alone(tiny_clip, texts, grad_mode):
    """One trunk pass and one backward pass per tag rank for several images of one size, with
    different numbers of tags (none too): each image's CAMs as when it runs alone."""
    torch.manual_seed(2)
    images = torch.randn(4, 3, 48, 80)
    tags = [[0, 2, 3], [], [1], [3, 0]]
    sizes = [(40, 70), (45, 75), (48, 80), (30, 50)]
    assert_batch_equals_each_alone(ClipES(tiny_clip, *texts, CamConfig(grad_mode=grad_mode)), images, tags, sizes)


def assert_batch_equals_each_alone(gen: ClipES, images, tags, sizes) -> None:
    """``gen.batch`` of the images equals each image's own call within 1e-4 (as the parity tests),
    and the maps are real ones, not all zeros."""
    together = gen.batch(images, tags, sizes)
    for b, image in enumerate(images):
        alone = gen(image, tags[b], sizes[b])
        assert together[b].shape == alone.shape == (len(tags[b]), *sizes[b])
        np.testing.assert_allclose(together[b], alone, atol=1e-4, rtol=0, err_msg=f"image {b}")
        assert len(tags[b]) == 0 or alone.max() > 0.5


def test_refined_cams_shape_range_and_layers(tiny_clip, texts):
    torch.manual_seed(1)
    image = torch.randn(3, 64, 96)
    gen = ClipES(tiny_clip, *texts)
    assert gen.affinity_layers == list(range(4, 11))
    out = gen(image, [1, 3], (61, 90))
    assert out.shape == (2, 61, 90) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1 and np.isclose(out.max(), 1, atol=1e-3)
    assert gen(image, [], (61, 90)).shape == (0, 61, 90)
    with_last = ClipES(tiny_clip, *texts, CamConfig(affinity_layers=(-8, None)))
    assert with_last.affinity_layers == list(range(4, 12))
    assert with_last(image, [1, 3], (61, 90)).shape == (2, 61, 90)


def test_bf16_close_to_fp32(tiny_clip, texts):
    torch.manual_seed(2)
    image = torch.randn(3, 64, 64)
    ref = ClipES(tiny_clip, *texts)(image, [0, 1], (64, 64))
    low = ClipES(tiny_clip, *texts, CamConfig(precision="bf16"))(image, [0, 1], (64, 64))
    assert low.dtype == np.float32 and np.isfinite(low).all()
    assert np.abs(low - ref).mean() < 0.1


@pytest.mark.parametrize("grad_mode", ["loop", "batched"])
@pytest.mark.parametrize("attention", ["exact", "fused"])
def test_a_batch_of_several_sizes_equals_each_image_alone(tiny_clip, texts, grad_mode, attention):
    """Images of different grids (the widest, the tallest and the longest sequence are three
    different images, and two grids have one token count) in one padded, masked pass: each
    image's CAMs as when it runs alone; padding enters no attention, mean, affinity or Grad-CAM."""
    g = torch.Generator().manual_seed(6)
    grids = [(3, 5), (6, 2), (2, 7), (4, 4), (5, 3), (3, 5)]
    images = [torch.randn(3, gh * 16, gw * 16, generator=g) for gh, gw in grids]
    tags = [[0, 2], [1], [3, 0, 2], [], [2], [1, 3]]
    sizes = [(gh * 16 - 3, gw * 16 + 5) for gh, gw in grids]
    assert_batch_equals_each_alone(ClipES(tiny_clip, *texts, CamConfig(grad_mode=grad_mode, attention=attention)),
                                   images, tags, sizes)


def test_grids_of_one_token_count_share_a_pass_without_mask(tiny_clip, texts):
    """3 x 5 and 5 x 3 (as VOC's 24 x 32 and 32 x 24): stacked tokens without padding or mask,
    each image's Grad-CAM on its own grid."""
    g = torch.Generator().manual_seed(8)
    images = [torch.randn(3, 48, 80, generator=g), torch.randn(3, 80, 48, generator=g)]
    gen = ClipES(tiny_clip, *texts)
    _, _, tokens = gen.trunk(images)
    assert tokens.mask is None and tokens.lengths is None
    together = gen.batch(images, [[0, 1], [2]], [(45, 77), (77, 45)])
    for image, tags, size, cams in zip(images, [[0, 1], [2]], [(45, 77), (77, 45)], together):
        np.testing.assert_allclose(cams, gen(image, tags, size), atol=1e-4, rtol=0)
