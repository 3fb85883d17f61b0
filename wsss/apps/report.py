"""One self-contained HTML page showing what the three stages made of a set of images.

Inputs are the stages' own outputs: the image folder, stage 1's ``tags.jsonl``, stage 2's
folder (``cams/ID.npz``, ``masks/ID.png``, ``masks_crf/ID.png``), optionally a folder of
segmenter predictions (``ID.png`` label maps) and mIoU tables (the JSON of
``tools/eval_masks.py`` or of ``tools/train_seg.py`` / ``tools/test_seg.py``). Every picture
is embedded as base64 JPEG, so the page can be mailed or archived on its own.

Sections: overview (settings, one line per image), one card per image (the image, its tag
scores, a CAM heat map per tag, label-map overlays with a legend of the classes they
contain), and the mIoU tables. Rendering uses numpy, OpenCV's colour maps and PIL only.
"""
from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.atomic_io import write_text_atomic
from tagclip_cls.core.images import find_image, load_rgb
from tagclip_cls.formats.tags import read_tag_records

from tagclip_cls.formats.mask_folder import read_cams
from tagclip_cls.formats.mask_png import IGNORE, read_label_png, voc_palette
from wsss.evaluation.results import read_results

MASK_PANELS = (("masks", "pseudo mask"), ("masks_crf", "pseudo mask + CRF"))
IGNORE_COLOUR = (224, 224, 192)


@dataclass
class ReportInputs:
    """What the report shows; only ``images``, ``tags`` and ``class_names`` are required."""

    images: str | os.PathLike
    tags: str | os.PathLike  # stage 1's tags.jsonl
    class_names: Sequence[str]
    stage2: str | os.PathLike | None = None  # folder holding cams/, masks/, masks_crf/
    predictions: str | os.PathLike | None = None  # segmenter ID.png label maps
    tables: Sequence[tuple[str, str | os.PathLike]] = ()  # (title, JSON path)
    label_names: Sequence[str] | None = None  # label value -> name; default background + classes
    title: str = "classify-then-segment report"
    banner: str | None = None  # a warning shown in red at the top
    settings: Sequence[tuple[str, str]] = ()  # (name, value) lines of the overview
    max_images: int | None = None
    display_side: int = 256  # longer side of every picture in the page
    notes: Sequence[str] = field(default_factory=list)  # extra overview remarks


def label_colours() -> np.ndarray:
    """``256 x 3`` uint8 colours of label values: the VOC palette, ignore in light grey."""
    colours = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    colours[IGNORE] = IGNORE_COLOUR
    return colours


def display_size(height: int, width: int, side: int) -> tuple[int, int]:
    """``(H, W)`` scaled so the longer side is at most ``side`` (never enlarged)."""
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def cam_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A CAM in [0, 1] as a JET heat map blended over the (same-sized) RGB image."""
    heat = cv2.applyColorMap(np.clip(cam * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return (rgb * (1 - alpha) + heat * alpha).astype(np.uint8)


def mask_overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Label colours blended over the (same-sized) RGB image."""
    colours = label_colours()[labels]
    return (rgb * (1 - alpha) + colours * alpha).astype(np.uint8)


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> str:
    """A ``data:`` URI of the image as base64 JPEG."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label_name(value: int, names: Sequence[str]) -> str:
    if value == IGNORE:
        return "ignore"
    return names[value] if value < len(names) else f"label {value}"


def _legend(labels: np.ndarray, names: Sequence[str]) -> str:
    colours = label_colours()
    items = []
    for value in np.unique(labels).tolist():
        r, g, b = colours[value]
        items.append(f'<span class="chip"><i style="background:rgb({r},{g},{b})"></i>'
                     f'{html.escape(_label_name(value, names))}</span>')
    return f'<div class="legend">{"".join(items)}</div>'


def _figure(uri: str, caption: str, extra: str = "", kind: str = "") -> str:
    return (f'<figure class="{kind}"><img class="{kind}" src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption>{extra}</figure>")


def _scores_table(record: dict, class_names: Sequence[str], top: int = 10) -> str:
    scores = [float(s) for s in record["scores"]]
    tagged = set(record["tags"])
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    shown = [i for i in order if i in tagged] + [i for i in order[:top] if i not in tagged]
    shown.sort(key=lambda i: -scores[i])
    rows = []
    for i in shown:
        name = class_names[i] if i < len(class_names) else f"class {i}"
        cls = ' class="tag"' if i in tagged else ""
        width = max(0.0, min(1.0, scores[i])) * 100
        rows.append(f"<tr{cls}><td>{html.escape(name)}</td><td>{scores[i]:.3f}</td>"
                    f'<td><div class="bar" style="width:{width:.0f}%"></div></td></tr>')
    more = len(scores) - len(shown)
    tail = f'<p class="muted">{more} lower-scoring classes not shown</p>' if more > 0 else ""
    return f'<table class="scores"><tr><th>class</th><th>score</th><th></th></tr>{"".join(rows)}</table>{tail}'


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    if array.shape[:2] == size:
        return array
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(array, (size[1], size[0]), interpolation=interp)


def _card(record: dict, inputs: ReportInputs, names: Sequence[str]) -> str:
    image_id = str(record["id"])
    rgb_full = load_rgb(find_image(inputs.images, image_id))
    size = display_size(*rgb_full.shape[:2], inputs.display_side)
    rgb = _resize(rgb_full, size, nearest=False)
    tag_names = [inputs.class_names[t] for t in record["tags"] if t < len(inputs.class_names)]
    head = (f'<div class="row">{_figure(encode_jpeg(rgb), image_id, kind="photo")}<div>'
            f'<p><b>tags:</b> {html.escape(", ".join(tag_names)) or "<i>none</i>"}</p>'
            f"{_scores_table(record, inputs.class_names)}</div></div>")
    head = f'<div class="block"><h4>image and tag scores</h4>{head}</div>'
    parts = [head]
    stage2 = Path(inputs.stage2) if inputs.stage2 else None
    cam_path = stage2 / "cams" / f"{image_id}.npz" if stage2 else None
    if cam_path is not None and cam_path.is_file():
        keys, cams = read_cams(cam_path)
        figures = [_figure(encode_jpeg(cam_overlay(rgb, _resize(cams[i].astype(np.float32), size, False))),
                           f"CAM: {inputs.class_names[k] if k < len(inputs.class_names) else k}", kind="cam")
                   for i, k in enumerate(keys)]
        parts.append(f'<div class="block"><h4>CAM heat maps</h4><div class="row">'
                     f'{"".join(figures) or "<p class=muted>no tags, no CAMs</p>"}</div></div>')
    elif stage2 is not None:
        parts.append('<p class="muted">no CAM file for this image</p>')
    panels = [(stage2 / sub / f"{image_id}.png", title) for sub, title in MASK_PANELS] if stage2 else []
    if inputs.predictions:
        panels.append((Path(inputs.predictions) / f"{image_id}.png", "segmenter prediction"))
    figures = []
    for path, title in panels:
        if not path.is_file():
            continue
        labels = read_label_png(path)
        if labels.shape != rgb_full.shape[:2]:
            raise UserError(f"{path}: label map is {labels.shape[1]}x{labels.shape[0]}, "
                            f"its image {rgb_full.shape[1]}x{rgb_full.shape[0]}")
        small = _resize(labels, size, nearest=True)
        figures.append(_figure(encode_jpeg(mask_overlay(rgb, small)), title, _legend(labels, names), kind="mask"))
    if figures:
        parts.append(f'<div class="block"><h4>label maps</h4><div class="row">{"".join(figures)}</div></div>')
    return (f'<section class="card" id="img-{html.escape(image_id)}"><h3>{html.escape(image_id)}</h3>'
            f'<div class="row">{"".join(parts)}</div></section>')


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _table_html(title: str, path: Path) -> str:
    """One results file (:mod:`wsss.evaluation.results`) as summary line and per-class table;
    classes without ground-truth pixels are left out (as they are of the means)."""
    record = read_results(path)
    summary = [(key, record[key]) for key in ("mIoU", "mAcc", "aAcc")]
    rows = [(name, row["IoU"], row["Acc"]) for name, row in record["per_class"].items() if row["gt_pixels"]]
    head = " · ".join(f"{html.escape(k)} <b>{_pct(v)}</b>" for k, v in summary)
    body = "".join(f"<tr><td>{html.escape(str(n))}</td><td>{_pct(i)}</td><td>{_pct(a)}</td></tr>" for n, i, a in rows)
    return (f'<div class="miou"><h3>{html.escape(title)}</h3><p>{head}</p>'
            f"<table><tr><th>class</th><th>IoU %</th><th>Acc %</th></tr>{body}</table></div>")


CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;max-width:1400px}
.banner{background:#c62828;color:#fff;padding:12px 16px;font-size:18px;font-weight:bold;border-radius:4px}
.card{border:1px solid #ccc;border-radius:6px;padding:8px 12px;margin:14px 0}
.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0}figcaption{font-size:13px;color:#444}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #eee}
.scores .tag{font-weight:bold;background:#e8f5e9}.bar{height:8px;background:#1976d2;min-width:1px;width:0}
.scores td:last-child{width:90px}
.legend{font-size:12px;max-width:330px}.chip{display:inline-block;margin:2px 6px 0 0}
.chip i{display:inline-block;width:11px;height:11px;margin-right:3px;border:1px solid #555;vertical-align:-1px}
.muted{color:#777;font-size:13px}.miou{display:inline-block;vertical-align:top;margin:0 24px 12px 0}
h4{margin:8px 0 4px}.block{margin-right:18px}
"""


def render_report(inputs: ReportInputs) -> str:
    """The report's HTML text."""
    records = read_tag_records(inputs.tags)
    if inputs.max_images is not None:
        records = records[:inputs.max_images]
    names = list(inputs.label_names or ("background", *inputs.class_names))
    banner = f'<div class="banner">{html.escape(inputs.banner)}</div>' if inputs.banner else ""
    settings = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in inputs.settings)
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in inputs.notes)
    overview_rows = "".join(
        f'<tr><td><a href="#img-{html.escape(str(r["id"]))}">{html.escape(str(r["id"]))}</a></td><td>'
        f'{html.escape(", ".join(inputs.class_names[t] for t in r["tags"] if t < len(inputs.class_names)))}</td></tr>'
        for r in records)
    cards = "".join(_card(r, inputs, names) for r in records)
    tables = [(t, Path(p)) for t, p in inputs.tables if Path(p).is_file()]
    tables_html = ("".join(_table_html(t, p) for t, p in tables)
                   or '<p class="muted">no ground truth, no mIoU tables</p>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(inputs.title)}</title>'
            f"<style>{CSS}</style></head><body>{banner}<h1>{html.escape(inputs.title)}</h1>"
            f'<section id="overview"><h2>Overview</h2><table>{settings}</table>{notes}'
            f"<p>{len(records)} images</p><table><tr><th>image</th><th>tags</th></tr>{overview_rows}</table></section>"
            f'<section id="images"><h2>Images</h2>{cards}</section>'
            f'<section id="miou"><h2>mIoU</h2>{tables_html}</section></body></html>\n')


def write_report(path: str | os.PathLike, inputs: ReportInputs) -> Path:
    """Render the report and write it to ``path`` atomically; returns the path."""
    text = render_report(inputs)
    write_text_atomic(path, text)
    return Path(path)
