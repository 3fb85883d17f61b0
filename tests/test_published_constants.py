"""The method's constants held to their published values (docs: /work/shared/SPEC.md; the TagCLIP
and CLIP-ES published code), each against a value written out here by hand, so that a one-character
change of any of them in the library fails a test.

Constants already held directly elsewhere are not repeated here: the scoremap2bbox rules
(test_boxes.py), the preset ratios, layer ranges, box thresholds and class lists (test_presets.py),
the DMAR layers 8..10 and the vote rule (test_tagger.py: dense forward and refine against
reference computations), the CWR candidate threshold, the 224 x 224 crop and the 0.5 / 0.5 score
mix (test_tagger.py), the arg-max fallback (test_tagger.py::test_select_tags_threshold_and_fallback),
the wrapped BGR CRF image by hand (test_crf.py) and the CAM epsilon (test_cams.py).
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import tagclip_cls.tagging.tagclip as tagclip_module
from tagclip_cls.core.images import CLIP_MEAN, CLIP_STD, prepare_image
from tagclip_cls.core.presets import load_preset, make_preset
from tagclip_cls.core.text import load_templates
from tagclip_cls.core.vit import attention, resized_pos_embed
from tagclip_cls.tagging.api import tag_config
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig

C, K = 7, 5  # text classes: 5 targets and 2 background words


@pytest.fixture(scope="module")
def text(tiny_clip):
    g = torch.Generator().manual_seed(11)
    return F.normalize(torch.randn(C, tiny_clip.model.text_projection.shape[1], generator=g), dim=-1)


# --- Stage 1: TagCLIP -------------------------------------------------------------------------


def test_tag_config_defaults_are_the_published_ones(tiny_clip, text):
    """TagConfig defaults (SPEC stage 1 steps 3, 6, 7): votes in >= 4 layers, DMAR average over
    layers L-4..L-2 (8, 9, 10 of 12), CWR and tag ratios 0.5, fp16 positional quirk on; a custom
    class list gets the same VOC constants (tagclip_cls/core/presets.py), COCO-Stuff its 0.1 and
    all layers but the last (0..10)."""
    config = TagConfig()
    assert config.vote_min_layers == 4
    assert config.dmar_layers == (-4, -1)
    assert config.cwr_ratio == 0.5 and config.tag_ratio == 0.5
    assert config.dmar and config.cwr and config.round_fp16_pos
    assert TagCLIP(tiny_clip, text, K).avg_layers == [8, 9, 10]
    custom = make_preset(classes=["cat", "dog"], background=["sky"])
    assert (custom.dmar_layers, custom.cwr_ratio, custom.tag_ratio) == ((-4, -1), 0.5, 0.5)
    voc = tag_config(load_preset("voc2007"))
    assert (voc.dmar_layers, voc.cwr_ratio, voc.tag_ratio, voc.vote_min_layers) == ((-4, -1), 0.5, 0.5, 4)
    stuff = tag_config(load_preset("cocostuff"))
    assert (stuff.cwr_ratio, stuff.tag_ratio, stuff.vote_min_layers) == (0.1, 0.1, 4)
    assert TagCLIP(tiny_clip, text, K, stuff).avg_layers == list(range(11))


def test_last_layer_self_only_mask_is_minus_100():
    """The last layer's additive mask off the diagonal is exactly -100 (SPEC stage 1 step 1; the
    published TagCLIP code). One head of width 4 (scale 1/2), q = k = v = x, identity output:
    token 0 = 10, token 1 = 30 give logits [50, 150] for token 0; -100 off the diagonal makes
    them [50, 50], so its output is 0.5 * 10 + 0.5 * 30 = 20 (-10 would give ~30, -1000 ~10)."""
    attn = nn.MultiheadAttention(4, 1)
    with torch.no_grad():
        attn.in_proj_weight.copy_(torch.cat([torch.eye(4)] * 3))
        attn.in_proj_bias.zero_()
        attn.out_proj.weight.copy_(torch.eye(4))
        attn.out_proj.bias.zero_()
    x = torch.zeros(1, 2, 4)
    x[0, 0, 0], x[0, 1, 0] = 10.0, 30.0
    out, probs = attention(attn, x, self_only=True)
    assert out[0, 0, 0].item() == pytest.approx(20.0, abs=1e-4)
    assert out[0, 1, 0].item() == pytest.approx(30.0, abs=1e-4)  # [150, 450] - [100, 0]: itself
    assert probs[0, 0, 1].item() == pytest.approx(1.0, abs=1e-6)  # recorded before the mask


def test_cwr_binarises_above_half_and_resizes_the_cell_mask_nearest_to_14(tiny_clip, text):
    """CWR (SPEC stage 1 step 6): the min-max scaled column is binarised at > 0.5 (strictly), the
    box of the true cells is cropped and resized bilinearly to 224 x 224, the cell mask of the box
    resized to 14 x 14 with nearest. Grid 5 x 6; class 0's column: 1.0 at (1, 1), 0.6 at (2, 2),
    0.55 at (2, 1), 0.51 at (1, 3) pass; 0.5 at (3, 4) and 0.45 at (0, 0) do not. Box rows 1..2,
    columns 1..3, cell mask [[1, 0, 1], [1, 1, 0]]; nearest 2 -> 14 rows: 0-6 from row 0, 7-13
    from row 1; 3 -> 14 columns (floor(j * 3 / 14)): 0-4, 5-9, 10-13."""
    grid = (5, 6)
    refined = torch.zeros(30, C)
    for (row, col), value in {(1, 1): 1.0, (2, 2): 0.6, (2, 1): 0.55, (1, 3): 0.51,
                              (3, 4): 0.5, (0, 0): 0.45}.items():
        refined[row * 6 + col, 0] = value
    local = refined[:, :K].max(dim=0).values
    image = torch.randn(3, 80, 96, generator=torch.Generator().manual_seed(5))
    classes, crops, masks = TagCLIP(tiny_clip, text, K).cwr_crops(image, refined, local, grid)
    assert classes == [0]
    expected_mask = torch.zeros(14, 14)
    expected_mask[:7, :5] = 1
    expected_mask[:7, 10:] = 1
    expected_mask[7:, :10] = 1
    assert masks[0].shape == (14, 14) and torch.equal(masks[0], expected_mask)
    assert crops[0].shape == (3, 224, 224)
    box = image[None, :, 16:48, 16:64]  # rows 1..2, columns 1..3 of 16-pixel patches
    assert torch.allclose(crops[0], F.interpolate(box, size=(224, 224), mode="bilinear", align_corners=False)[0],
                          atol=1e-5)


def test_cwr_class_token_mask_is_minus_1000(tiny_clip, text, monkeypatch):
    """The CWR forward masks the class token's row with exactly -1000 on the patch tokens outside
    the cell mask, 0 elsewhere, in every layer (SPEC stage 1 step 6; the published TagCLIP code)."""
    seen = []
    real = tagclip_module.block_forward

    def spy(block, x, mask=None, *args, **kwargs):
        seen.append(mask.clone())
        return real(block, x, mask, *args, **kwargs)

    monkeypatch.setattr(tagclip_module, "block_forward", spy)
    cell_mask = torch.zeros(1, 14, 14)
    cell_mask[0, 2:5, 3:9] = 1
    TagCLIP(tiny_clip, text, K).masked_class_probs(torch.zeros(1, 3, 224, 224), cell_mask)
    expected = torch.zeros(1, 1, 197, 197)
    row = torch.full((14, 14), -1000.0)
    row[2:5, 3:9] = 0.0
    expected[0, 0, 0, 1:] = row.flatten()
    assert len(seen) == 12 and all(torch.equal(mask, expected) for mask in seen)


@pytest.mark.parametrize("preset, local, tags", [
    # 0.1 + 0.5 * 0.8 = 0.5: 0.505 passes, 0.495 does not (0.49 or 0.51 would move one of them)
    ("voc2007", [0.1, 0.9, 0.505, 0.495, 0.3], [1, 2]),
    # COCO-Stuff 0.1 + 0.1 * 0.8 = 0.18: 0.185 passes, 0.175 does not
    ("cocostuff", [0.1, 0.9, 0.185, 0.175, 0.5], [1, 2, 4]),
])
def test_tag_threshold_ratio_in_the_scoring_path(tiny_clip, text, monkeypatch, preset, local, tags):
    """TagCLIP.score picks tags above min + 0.5 * (max - min) (0.1 for COCO-Stuff) (SPEC stage 1
    step 7), with the ratio the preset's TagConfig carries; crafted patch scores, no DMAR/CWR."""
    config = dataclasses.replace(tag_config(load_preset(preset)), dmar=False, cwr=False)
    tagger = TagCLIP(tiny_clip, text, K, config)
    probs = torch.zeros(1, 4, C)
    probs[0, 2, :K] = torch.tensor(local)
    monkeypatch.setattr(tagger, "dense_forward", lambda images: (probs, None, None))
    (result,) = tagger.score(torch.zeros(1, 3, 32, 32))
    assert np.allclose(result.scores, local) and result.tags == tags


def test_no_tag_passing_falls_back_to_the_arg_max():
    """When no score passes the relative threshold the arg-max alone is the tag (SPEC stage 1
    step 7). With a ratio below 1 that happens only for equal scores, where arg-max and arg-min
    are both 0; at ratio 1 the threshold is the maximum itself, so distinct scores fall back too."""
    assert tagclip_module.select_tags(np.array([0.2, 0.9, 0.5, 0.1]), 1.0) == [1]
    assert tagclip_module.select_tags(np.array([0.3, 0.3, 0.3]), 0.5) == [0]


# --- Shared pieces: preprocessing, positional table, templates --------------------------------


def test_clip_mean_std_and_bicubic_resize_to_patch_multiples():
    """CLIP's mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258,
    0.27577711), and a bicubic resize straight to the next multiples of the patch (SPEC, shared
    pieces: preprocessing): a 3 x 5 image becomes 16 x 16 as PIL's BICUBIC makes it."""
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    prepared = prepare_image(arr, 16)
    resized = np.asarray(Image.fromarray(arr).resize((16, 16), Image.BICUBIC), dtype=np.float32) / 255
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
    expected = torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1))
    assert prepared.tensor.shape == (3, 16, 16) and prepared.orig_size == (3, 5)
    assert torch.allclose(prepared.tensor, expected, atol=1e-5)


def test_positional_table_grid_resized_bilinear_without_corner_alignment():
    """The positional table at another grid: class row kept, grid resized bilinearly with
    align_corners False (SPEC, shared pieces). A 2 x 2 grid [[0, 1], [2, 3]] to 4 x 4 samples at
    -0.25 (clamped), 0.25, 0.75, 1.25 (clamped): a = [0, 0.25, 0.75, 1] per axis, value 2 a_r + a_c
    (align_corners True would give thirds, nearest [0, 0, 1, 1], bicubic overshoots)."""
    table = torch.tensor([[7.0], [0.0], [1.0], [2.0], [3.0]])
    out = resized_pos_embed(SimpleNamespace(positional_embedding=table), (4, 4))
    a = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = torch.cat([torch.tensor([[7.0]]), (2 * a[:, None] + a[None, :]).reshape(16, 1)])
    assert torch.allclose(out, expected, atol=1e-6)


IMAGENET_80 = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
]
TAGCLIP_5 = ["there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
             "this is the {} in the scene.", "this is one {} in the scene."]


def test_templates_are_the_80_imagenet_ones_and_the_5_scene_ones():
    """data/templates/tagclip_85.txt: the 80 ImageNet templates of the CLIP paper (its
    Prompt_Engineering_for_ImageNet notebook, in its order) and the 5 listed in SPEC stage 1."""
    assert len(IMAGENET_80) == 80 and len(set(IMAGENET_80)) == 80
    assert load_templates() == IMAGENET_80 + TAGCLIP_5


def test_cocostuff_png_values_to_class_indices():
    """data/presets/cocostuff.json png_value_to_class: COCO-Stuff PNG values 0..181 in order, the
    11 unused thing ids (street sign, hat, shoe, eye glasses, plate, mirror, window, desk, door,
    blender, hair brush: 11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90) map to 255, the others to
    0..170 (SPEC, datasets: the 171 classes)."""
    unused = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
    expected, index = [], 0
    for value in range(182):
        if value in unused:
            expected.append(255)
        else:
            expected.append(index)
            index += 1
    assert index == 171
    assert list(load_preset("cocostuff").clip_es.png_value_to_class) == expected


# --- Stage 2: CLIP-ES -------------------------------------------------------------------------


def test_clip_es_prompt_and_defaults():
    """CLIP-ES's single template "a clean origami {}." and its VOC defaults, affinity layers
    L-8..L-2 (python slice -8:-1) and boxes at 0.4 (SPEC stage 2 and step 3), also what a
    custom class list gets."""
    from wsss.masks.cams import CAM_TEMPLATE, CamConfig

    assert CAM_TEMPLATE == "a clean origami {}."
    assert (CamConfig().affinity_layers, CamConfig().box_threshold) == ((-8, -1), 0.4)
    custom = make_preset(classes=["cat", "dog"]).clip_es
    assert (custom.affinity_layers, custom.box_threshold) == ((-8, -1), 0.4)


def test_crf_default_parameters_and_published_image_mean():
    """Dense CRF defaults (SPEC stage 2 step 5, CLIP-ES's evaluation): 10 iterations, Gaussian
    sxy=1 compat=3, bilateral sxy=67 srgb=3 compat=4; the published image is BGR minus
    (104.008, 116.669, 122.675); the default image mode is that published one."""
    from wsss.crf import CRFParams
    from wsss.crf import image as crf_image
    from wsss.masks import crf as crf_module

    params = CRFParams()
    assert params.iterations == 10
    assert (params.gauss_sxy, params.gauss_compat) == (1.0, 3.0)
    assert (params.bilateral_sxy, params.bilateral_srgb, params.bilateral_compat) == (67.0, 3.0, 4.0)
    assert crf_image.PUBLISHED_BGR_MEAN == (104.008, 116.669, 122.675)
    settings = crf_module.CRFSettings()
    assert settings.params == params and settings.image_mode == "published"


def test_crf_defaults_reach_pydensecrf(monkeypatch):
    """crf_rows with every default calls pydensecrf as CLIP-ES does (SPEC stage 2 step 5):
    addPairwiseGaussian(sxy=1, compat=3), addPairwiseBilateral(sxy=67, srgb=3, compat=4) on the
    wrapped BGR-minus-mean image, inference(10). Pixel (20, 120, 220): BGR minus the mean is
    (115.992, 3.331, -102.675) -> (115, 3, 154); black: (152, 140, 134)."""
    pytest.importorskip("pydensecrf")
    from wsss.crf import pydensecrf_backend
    from wsss.masks.crf import crf_rows

    calls = {}

    class FakeCRF:
        def __init__(self, width, height, labels):
            calls["size"] = (width, height, labels)

        def setUnaryEnergy(self, unary):
            calls["unary"] = unary

        def addPairwiseGaussian(self, **kwargs):
            calls["gaussian"] = kwargs

        def addPairwiseBilateral(self, **kwargs):
            calls["bilateral"] = {k: (v.copy() if k == "rgbim" else v) for k, v in kwargs.items()}

        def inference(self, iterations):
            calls["iterations"] = iterations
            return np.stack([np.full(2, 0.9), np.full(2, 0.1)])

    monkeypatch.setattr(pydensecrf_backend, "dcrf", SimpleNamespace(DenseCRF2D=FakeCRF))
    rgb = np.array([[[20, 120, 220], [0, 0, 0]]], np.uint8)
    prob = np.stack([np.full((1, 2), 0.7), np.full((1, 2), 0.3)]).astype(np.float32)
    rows = crf_rows(rgb, prob)
    assert rows.tolist() == [[0, 0]]
    assert calls["size"] == (2, 1, 2) and calls["iterations"] == 10
    assert calls["gaussian"] == {"sxy": 1.0, "compat": 3.0}
    image = calls["bilateral"].pop("rgbim")
    assert calls["bilateral"] == {"sxy": 67.0, "srgb": 3.0, "compat": 4.0}
    assert image.tolist() == [[[115, 3, 154], [152, 140, 134]]]
