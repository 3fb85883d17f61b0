"""The tables of :mod:`wsss.apps.compare` as markdown (for the terminal) and as one HTML page.

Per benchmark: a summary (runs ``R1``, ``R2``, ... and the paper's figures, each with the
experiment it measures, and every headline value's delta against ``R1``; a figure scored on
another class table is a ``reference`` row, marked so, without a delta), the paper's sources,
then the per-class scores of the runs side by side with each run's per-class delta against
``R1``. Values are rounded to two decimals here only; a delta whose size is at least the
highlight threshold is bold in markdown and coloured in HTML (green up, red down).
"""
from __future__ import annotations

import html
from typing import Callable, Iterator, Sequence

from wsss.apps.compare import BENCHMARK_TITLES, SUMMARY_KEYS, Comparison, RunScores
from wsss.evaluation.published import PublishedFigure
from wsss.evaluation.results import format_percent

Cell = tuple[str, str]  # (text, CSS classes)
NO_FIGURES = "No published figure was scored on these classes: the paper's rows are references, without a delta."
#: the id cell of a paper figure's row: scored on the runs' class table, or on another one
FIGURE_ROW_IDS = ("paper", "reference")


def _delta(d: float | None, highlight: float) -> Cell:
    """A delta's text and classes: ``delta``, plus ``beyond up``/``beyond down`` when large."""
    if d is None:
        return "-", "delta"
    beyond = abs(d) >= highlight
    return f"{d:+.2f}", "delta" + (f" beyond {'up' if d > 0 else 'down'}" if beyond else "")


def title(comparison: Comparison) -> str:
    """E.g. ``pseudo masks (eval_masks.py): mIoU, classes of voc2007 / voc2012 (21)``."""
    classes = " / ".join(comparison.presets) if comparison.presets else "your own list"
    return (f"{BENCHMARK_TITLES[comparison.benchmark]}: {comparison.metric}, "
            f"classes of {classes} ({len(comparison.classes)})")


def _run_label(run: RunScores) -> str:
    return "this project's run" + (f" ({run.description})" if run.description else "")


def other_classes(figure: PublishedFigure) -> str:
    """A reference row's mark in place of its delta, e.g. ``other classes (voc2012, 21): no delta``."""
    return f"other classes ({figure.dataset}, {len(figure.classes)}): no delta"


def _figure_row(comparison: Comparison, figure: PublishedFigure, row_id: str, last: Cell) -> list[Cell]:
    """A paper figure's summary row: ``row_id``, its labels, its value, then ``last`` (delta or mark)."""
    return [(row_id, "id"), (figure.name, "name"), (figure.experiment, "experiment"),
            (f"{figure.paper}: {figure.table}", "source"),
            *[(format_percent(figure.value if k == comparison.metric else None), "value")
              for k in SUMMARY_KEYS[comparison.benchmark]], ("-", "value"), last]


def summary_rows(comparison: Comparison, highlight: float) -> Iterator[list[Cell]]:
    """Rows of the summary: id, name, experiment, source, the summary values, images, delta (a
    reference's :func:`other_classes` mark instead)."""
    keys = SUMMARY_KEYS[comparison.benchmark]
    for index, run in enumerate(comparison.runs):
        delta = ("", "delta") if index == 0 else _delta(comparison.summary_delta(run.summary[comparison.metric]),
                                                          highlight)
        yield [(f"R{index + 1}", "id"), (run.name, "name"), (_run_label(run), "experiment"), ("this run", "source"),
               *[(format_percent(run.summary[k]), "value") for k in keys],
               (format_percent(None) if run.num_images is None else str(run.num_images), "value"), delta]
    for figure in comparison.figures:
        yield _figure_row(comparison, figure, FIGURE_ROW_IDS[0], _delta(comparison.summary_delta(figure.value),
                                                                        highlight))
    for figure in comparison.references:
        yield _figure_row(comparison, figure, FIGURE_ROW_IDS[1], (other_classes(figure), "mark"))


def summary_header(comparison: Comparison) -> list[str]:
    return ["row", "name", "experiment", "source", *SUMMARY_KEYS[comparison.benchmark], "images",
            f"Δ {comparison.metric} vs R1"]


def class_rows(comparison: Comparison, highlight: float) -> Iterator[list[Cell]]:
    """Rows of the per-class table: class, each run's score, each later run's delta vs R1."""
    deltas = [comparison.class_deltas(run) for run in comparison.runs[1:]]
    for name in comparison.classes:
        yield [(name, "name"), *[(format_percent(run.per_class[name]), "value") for run in comparison.runs],
               *[_delta(d[name], highlight) for d in deltas]]


def class_header(comparison: Comparison) -> list[str]:
    score = "AP" if comparison.benchmark == "tags" else "IoU"
    runs = [f"R{i + 1} {score}" for i in range(len(comparison.runs))]
    return ["class", *runs, *[f"Δ R{i + 1}−R1" for i in range(1, len(comparison.runs))]]


def sources(comparison: Comparison) -> list[str]:
    """``paper: citation`` of each paper the table's figures come from."""
    return list(dict.fromkeys(f"{f.paper}: {f.citation}" for f in (*comparison.figures, *comparison.references)))


def _note(highlight: float) -> str:
    return (f"Deltas are in points against R1, the first run given; those of at least {highlight:.2f} points "
            "are highlighted. A class without ground truth (or without a positive image) shows '-'.")


# --- markdown -------------------------------------------------------------------------------------

def _md_cell(text: str, classes: str) -> str:
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if "beyond" in classes else text


def _md_table(header: Sequence[str], rows: Iterator[list[Cell]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_md_cell(t, c) for t, c in row) + " |" for row in rows]


def markdown(comparisons: Sequence[Comparison], highlight: float) -> str:
    """Every comparison as markdown: title, summary, sources, note and per-class table."""
    lines: list[str] = []
    for comparison in comparisons:
        lines += [f"## {_md_cell(title(comparison), '')}", ""]
        lines += _md_table(summary_header(comparison), summary_rows(comparison, highlight)) + [""]
        lines += [f"- {_md_cell(s, '')}" for s in sources(comparison)]
        lines += [] if comparison.figures else ["", NO_FIGURES]
        lines += ["", _note(highlight), ""]
        lines += _md_table(class_header(comparison), class_rows(comparison, highlight)) + [""]
    return "\n".join(lines)


# --- HTML -----------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
td,th{padding:3px 8px;text-align:left;border-bottom:1px solid #e4e4e4;vertical-align:top}
td.value,td.delta{text-align:right;font-variant-numeric:tabular-nums}
td.experiment{max-width:420px}
td.delta.beyond{font-weight:bold}
td.delta.beyond.up{background-color:rgb(200, 230, 201)}
td.delta.beyond.down{background-color:rgb(255, 205, 210)}
tr.paper{background-color:rgb(245, 245, 245)}
tr.reference{color:#777;font-style:italic}
.note,.sources{font-size:13px;color:#555}
"""


def _html_table(header: Sequence[str], rows: Iterator[list[Cell]], table_class: str,
                row_class: Callable[[list[Cell]], str] | None = None) -> str:
    """A table; ``row_class`` gives each row's CSS class (none without it)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        ("<tr>" if row_class is None else f'<tr class="{row_class(row)}">')
        + "".join(f'<td class="{c}">{html.escape(t)}</td>' for t, c in row) + "</tr>" for row in rows)
    return f'<table class="{table_class}"><tr>{head}</tr>{body}</table>'


def summary_row_class(row: list[Cell]) -> str:
    """A summary row's CSS class: its id for the paper's figures (``paper``, ``reference``), else ``run``."""
    return row[0][0] if row[0][0] in FIGURE_ROW_IDS else "run"


def html_page(comparisons: Sequence[Comparison], highlight: float) -> str:
    """Every comparison on one self-contained HTML page."""
    sections = []
    for comparison in comparisons:
        refs = "".join(f"<li>{html.escape(s)}</li>" for s in sources(comparison))
        missing = "" if comparison.figures else f'<p class="note">{NO_FIGURES}</p>'
        sections.append(
            f'<section class="benchmark" data-benchmark="{html.escape(comparison.benchmark)}">'
            f"<h2>{html.escape(title(comparison))}</h2>"
            + _html_table(summary_header(comparison), summary_rows(comparison, highlight), "summary",
                          summary_row_class)
            + missing + f'<ul class="sources">{refs}</ul><p class="note">{html.escape(_note(highlight))}</p>'
            + _html_table(class_header(comparison), class_rows(comparison, highlight), "classes") + "</section>")
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>run comparison</title>'
            f"<style>{CSS}</style></head><body><h1>Runs compared with each other and with the paper</h1>"
            + "".join(sections) + "</body></html>\n")
