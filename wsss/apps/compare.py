"""Runs compared with each other and with the paper: one table per benchmark.

A run is a folder (or one file) the tools wrote:

* ``tools/gen_tags.py``: ``metrics.json`` (mAP, F1, per-class AP) -> benchmark ``tags``;
* ``tools/eval_masks.py``: ``results.json`` (mIoU of label maps: pseudo masks, with or without
  CRF) -> benchmark ``masks``; a file given by name, such as the pipeline's ``eval/masks.json``,
  counts the same;
* ``tools/train_seg.py`` / ``tools/test_seg.py``: ``results_val.json``, ``results_test.json`` and
  any ``results_<split>_<variant>.json`` beside them -> benchmark ``segmenter``.

Every metrics file is one row, named by its path without ``.json``. The runs of one benchmark
must score the same class table (else a :class:`UserError` names both); the first is the
baseline that the others' deltas, per class and overall, are taken against. Every paper figure
(:mod:`wsss.evaluation.published`) of that benchmark joins the table as a row: with its delta
where it was scored on the runs' class table, as a reference without one where not.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tagclip_cls.formats.tags import TagFolder
from tagclip_cls.runtime.atomic_io import write_text_atomic
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.ids import inside_root
from tagclip_cls.tagging.metrics import read_metrics
from wsss.evaluation.published import PublishedFigure, figures_for, presets_with
from wsss.evaluation.results import read_results, run_description

#: mIoU files of the segmenter's work dir (SegResultsTableHook's ``results_{split}``, and variants)
SEGMENTER_PREFIX = "results_"
#: a run folder's mIoU files: eval_masks' results.json and the segmenter's SEGMENTER_PREFIX files
RESULTS_GLOB = "results*.json"
#: summary columns of each benchmark's runs, the first one the headline metric
SUMMARY_KEYS = {"tags": ("mAP", "F1", "precision", "recall"), "masks": ("mIoU", "mAcc", "aAcc"),
                "segmenter": ("mIoU", "mAcc", "aAcc")}
#: what each benchmark measures, as table titles say it
BENCHMARK_TITLES = {"tags": "image tags (gen_tags.py)", "masks": "pseudo masks (eval_masks.py)",
                    "segmenter": "segmenter (train_seg.py / test_seg.py)"}
OUTPUT_NAMES = ("compare.md", "compare.html")


@dataclass(frozen=True)
class RunScores:
    """One metrics file's scores."""

    name: str  # the file's path without .json, as given
    path: Path
    benchmark: str
    classes: tuple[str, ...]
    summary: dict[str, float | None]  # SUMMARY_KEYS[benchmark] -> percent
    per_class: dict[str, float | None]  # class -> AP or IoU (None: no positive / no ground truth)
    num_images: int | None
    description: str  # what was scored, e.g. "voc2012, val.txt"


@dataclass(frozen=True)
class Comparison:
    """One benchmark's table: its runs (the first the baseline), the paper's figures on their class
    table and the paper's figures on other class tables (references)."""

    benchmark: str
    classes: tuple[str, ...]
    presets: tuple[str, ...]  # presets with this class table (empty: the user's own classes)
    runs: tuple[RunScores, ...]
    figures: tuple[PublishedFigure, ...]
    references: tuple[PublishedFigure, ...]

    @property
    def metric(self) -> str:
        return SUMMARY_KEYS[self.benchmark][0]

    def summary_delta(self, value: float | None) -> float | None:
        """A headline value's delta against the baseline run's."""
        return points(value, self.runs[0].summary[self.metric])

    def class_deltas(self, run: RunScores) -> dict[str, float | None]:
        """Per-class deltas of ``run`` against the baseline run."""
        base = self.runs[0].per_class
        return {name: points(run.per_class[name], base[name]) for name in self.classes}


def points(value: float | None, baseline: float | None) -> float | None:
    """``value - baseline`` in percentage points, or None when either is missing."""
    return None if value is None or baseline is None else value - baseline


def benchmark_of(path: Path) -> str:
    """Which benchmark a metrics file belongs to, from its name (see the module docstring)."""
    if path.name == TagFolder(path.parent).metrics.name:
        return "tags"
    return "segmenter" if path.stem.startswith(SEGMENTER_PREFIX) else "masks"


def metrics_files(run: str | os.PathLike) -> list[Path]:
    """The metrics files of a run folder (``metrics.json``, then ``results*.json`` by name), or
    the run itself when it is a file; a ``UserError`` when there is none."""
    path = Path(run)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{run}: run folder not found")
    found = [p for p in [TagFolder(path).metrics, *sorted(path.glob(RESULTS_GLOB))] if p.is_file()]
    if not found:
        raise UserError(f"{run}: no metrics.json or {RESULTS_GLOB} here: not an output folder of gen_tags.py, "
                        "eval_masks.py or test_seg.py")
    return found


def read_scores(path: Path) -> RunScores:
    """The scores of one metrics file (``UserError`` naming it when missing or malformed)."""
    benchmark = benchmark_of(path)
    name = str(path.with_suffix("")) if path.suffix == ".json" else str(path)
    if benchmark == "tags":
        record = read_metrics(path)
        per_class = record["per_class_AP"]
        return RunScores(name, path, benchmark, tuple(per_class), {k: record[k] for k in SUMMARY_KEYS[benchmark]},
                         dict(per_class), record["num_images"], "")
    record = read_results(path)
    per_class = {label: row["IoU"] for label, row in record["per_class"].items()}
    return RunScores(name, path, benchmark, tuple(per_class), {k: record[k] for k in SUMMARY_KEYS[benchmark]},
                     per_class, record["num_images"], run_description(record))


def _class_difference(a: Sequence[str], b: Sequence[str]) -> str:
    only_a, only_b = [c for c in a if c not in b], [c for c in b if c not in a]
    if not only_a and not only_b:
        return "same classes in another order"
    return "; ".join(([f"only the first has {only_a[:3]}"] if only_a else []) +
                     ([f"only the second has {only_b[:3]}"] if only_b else []))


def compare_runs(runs: Sequence[str | os.PathLike]) -> list[Comparison]:
    """One :class:`Comparison` per benchmark of ``runs`` (folders or metrics files), in the order
    they first appear; a ``UserError`` for a run without metrics, a malformed metrics file, the
    same file given twice, or runs of one benchmark whose class tables differ."""
    scores: list[RunScores] = []
    for run in runs:
        for path in metrics_files(run):
            twin = next((s for s in scores if s.path.resolve() == path.resolve()), None)
            if twin is not None:
                raise UserError(f"{path}: given twice (also as {twin.path})")
            scores.append(read_scores(path))
    comparisons = []
    for benchmark in dict.fromkeys(s.benchmark for s in scores):
        group = [s for s in scores if s.benchmark == benchmark]
        first = group[0]
        other = next((s for s in group if s.classes != first.classes), None)
        if other is not None:
            raise UserError(f"{first.path} and {other.path}: different class tables "
                            f"({_class_difference(first.classes, other.classes)}); compare runs on the same classes")
        figures, references = figures_for(benchmark, first.classes)
        comparisons.append(Comparison(benchmark, first.classes, tuple(presets_with(benchmark, first.classes)),
                                      tuple(group), tuple(figures), tuple(references)))
    return comparisons


def write_outputs(out: str | os.PathLike, texts: Sequence[str]) -> list[Path]:
    """Write ``texts`` (markdown, HTML) to ``out``'s :data:`OUTPUT_NAMES`, each atomically and
    only inside ``out`` (both checked before either is written); returns the paths."""
    targets = [Path(out) / name for name in OUTPUT_NAMES]
    for target in targets:
        inside_root(out, target)
    for target, text in zip(targets, texts):
        write_text_atomic(target, text, out)
    return targets
