"""Every preset constant against the facts of the method (the published code and its class lists), written
out here independently of data/presets/*.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tagclip_cls.core.presets import coarse27_names, load_preset

FACTS = json.loads((Path(__file__).resolve().parent / "fixtures" / "classes.json").read_text())
# the published code: DMAR layers L-4..L-2 (COCO-Stuff: all but the last), CWR and tag ratios 0.5 (0.1);
# CLIP-ES: VOC layers L-8..L-2 with boxes at 0.4, COCO and COCO-Stuff L-8..L-1 with boxes at 0.7
PUBLISHED = {
    "voc": dict(dmar_layers=(-4, -1), ratio=0.5, affinity_layers=[-8, -1], box=0.4),
    "coco": dict(dmar_layers=(-4, -1), ratio=0.5, affinity_layers=[-8, None], box=0.7),
    "cocostuff": dict(dmar_layers=(0, -1), ratio=0.1, affinity_layers=[-8, None], box=0.7),
}
PRESETS = {"voc2007": "voc", "voc2012": "voc", "coco2014": "coco", "coco2017": "coco", "cocostuff": "cocostuff"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_constants(name):
    family = PRESETS[name]
    preset, spec = load_preset(name), PUBLISHED[family]
    assert preset.dmar_layers == spec["dmar_layers"]
    assert preset.cwr_ratio == preset.tag_ratio == spec["ratio"]
    assert list(preset.clip_es.affinity_layers) == spec["affinity_layers"]
    assert preset.clip_es.box_threshold == spec["box"]
    if family == "cocostuff":
        facts = FACTS["cocostuff"]
        assert list(preset.classes) == facts["classes_171"] and preset.background_words == ()
        assert preset.clip_es.background_words == ("background",)  # CLIP-ES's single extra class
        used = [v for v in range(182) if v not in facts["png_values_unused"]]
        assert list(preset.clip_es.class_to_coarse27) == [facts["png_value_to_coarse27"][v] for v in used]
        assert preset.clip_es.label_space == "coarse27"
        assert len(coarse27_names(preset)) == 27
    else:
        facts = FACTS[family]
        assert list(preset.classes) == facts["classes"]
        assert list(preset.background_words) == facts["background_words"]
        assert list(preset.clip_es.cam_names) == facts["cam_names"]
        assert list(preset.clip_es.background_words) == facts["cam_background_words"]
        assert preset.clip_es.label_space == "background+classes"
