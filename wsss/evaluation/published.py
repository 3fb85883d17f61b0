"""The paper's published figures (``data/published/figures.json``), the one place they are kept.

Each figure is one number of one benchmark: ``tags`` (mAP of stage 1's image tags), ``masks``
(mIoU of label maps scored by ``tools/eval_masks.py``: pseudo masks) or ``segmenter`` (mIoU of a
trained network, ``tools/train_seg.py`` / ``tools/test_seg.py``). It names its paper, where in
the paper it stands, the experiment it measures (a label that says, e.g., that CLIP-ES trained
its network on masks made from ground-truth labels) and the dataset preset whose class table it
was scored on: runs of that class table get their deltas to it, runs of other classes see it as a
reference only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tagclip_cls.core.presets import available_presets, load_preset
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.records import is_percent
from tagclip_cls.runtime.resources import data_file
from wsss.evaluation.miou import eval_class_names

#: benchmark -> the metric its figures (and runs) report
BENCHMARK_METRICS = {"tags": "mAP", "masks": "mIoU", "segmenter": "mIoU"}
FIGURE_KEYS = ("benchmark", "value", "dataset", "split", "paper", "table", "experiment", "variant")


@dataclass(frozen=True)
class PublishedFigure:
    """One published number with where it comes from and what it measures."""

    benchmark: str  # a key of BENCHMARK_METRICS
    value: float  # percent
    dataset: str  # the preset whose class table it was scored on
    split: str  # e.g. "VOC2012 val"
    paper: str  # short name, e.g. "TagCLIP"
    citation: str  # the paper in full
    table: str  # where in the paper
    experiment: str  # what was measured, e.g. "pseudo masks, not a trained network"
    variant: str  # e.g. "with CRF"; may be empty

    @property
    def name(self) -> str:
        """A row name, e.g. ``TagCLIP, VOC2012 val, with CRF``."""
        return ", ".join(p for p in (self.paper, self.split, self.variant) if p)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class table it was scored on (:func:`class_table` of its benchmark and preset)."""
        return class_table(self.benchmark, self.dataset)


def class_table(benchmark: str, dataset: str) -> tuple[str, ...]:
    """The names a run of ``benchmark`` on preset ``dataset`` scores: the classes for tags, the
    label names (background + classes, or COCO-Stuff's 27) for mIoU."""
    return load_preset(dataset).classes if benchmark == "tags" else eval_class_names(dataset)


def _figure(raw: Any, papers: dict, experiments: dict, where: str) -> PublishedFigure:
    if not isinstance(raw, dict) or set(raw) != set(FIGURE_KEYS):
        raise ValueError(f"{where}: expected an object with exactly the keys {list(FIGURE_KEYS)}")
    value = raw["value"]
    if not is_percent(value):
        raise ValueError(f"{where}: 'value' must be a percentage")
    if raw["benchmark"] not in BENCHMARK_METRICS:
        raise ValueError(f"{where}: unknown benchmark {raw['benchmark']!r}")
    if raw["dataset"] not in available_presets():
        raise ValueError(f"{where}: unknown dataset preset {raw['dataset']!r}")
    if raw["paper"] not in papers or raw["experiment"] not in experiments:
        raise ValueError(f"{where}: paper and experiment must be keys of 'papers' and 'experiments'")
    return PublishedFigure(benchmark=raw["benchmark"], value=float(value), dataset=raw["dataset"],
                           split=str(raw["split"]), paper=raw["paper"], citation=papers[raw["paper"]],
                           table=str(raw["table"]), experiment=experiments[raw["experiment"]],
                           variant=str(raw["variant"]))


def published_figures() -> list[PublishedFigure]:
    """Every figure of ``data/published/figures.json``, in file order (a malformed file is a bug
    of the checkout: ``ValueError``)."""
    path = data_file("published", "figures.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    papers, experiments = raw["papers"], raw["experiments"]
    return [_figure(f, papers, experiments, f"{path}: figure {i}") for i, f in enumerate(raw["figures"])]


def figures_for(benchmark: str, classes: tuple[str, ...]) -> tuple[list[PublishedFigure], list[PublishedFigure]]:
    """The figures of ``benchmark``: those scored on exactly the class table ``classes``, then
    those scored on another one (references, which no delta can be taken against)."""
    figures = [f for f in published_figures() if f.benchmark == benchmark]
    return [f for f in figures if f.classes == classes], [f for f in figures if f.classes != classes]


def segmenter_references(dataset: str) -> list[dict[str, Any]]:
    """The published trained-network figures on preset ``dataset`` as a results file's
    ``published`` entries, each named with its experiment (e.g. that CLIP-ES trained on masks made
    from ground-truth image labels); a name that is no preset is a ``UserError``."""
    if dataset not in available_presets():
        raise UserError(f"published figures: {dataset!r} is not a dataset preset ({', '.join(available_presets())})")
    return [{"name": f"{fig.name} [{fig.experiment}]", "mIoU": fig.value}
            for fig in published_figures() if fig.benchmark == "segmenter" and fig.dataset == dataset]


def presets_with(benchmark: str, classes: tuple[str, ...]) -> list[str]:
    """The presets whose class table for ``benchmark`` is ``classes`` (e.g. voc2007 and voc2012)."""
    return [name for name in available_presets() if class_table(benchmark, name) == classes]
