"""One self-contained HTML page showing what the three stages made of a set of images.

Inputs are the stages' own outputs: the image folder, stage 1's ``tags.jsonl``, stage 2's
folder (``cams/ID.npz``, ``masks/ID.png``, ``masks_crf/ID.png``), optionally a folder of
segmenter predictions (``ID.png`` label maps) and mIoU tables (the JSON of
``tools/eval_masks.py`` or of ``tools/train_seg.py`` / ``tools/test_seg.py``). Every picture
is embedded (base64 JPEG; the colour scale PNG), so the page can be mailed or archived on its
own. The demo and the pipeline make one; ``tools/make_report.py`` (:mod:`.run_report`) makes
one of any run's folders.

Sections: overview (settings, one line per image), one card per image (the image, its tag
scores, a CAM heat map per tag with the JET colour scale from 0 to 1, label-map overlays with
region borders and a legend of the classes they contain), and the mIoU tables.

Readability: pictures are shown with their longer side between ``min_display_side`` and
``display_side`` (small images enlarged, label maps nearest-neighbour); overlays are blended
over the photo lifted to [128, 255], so they keep their colours on dark photos. Outputs made
with random CLIP weights (``random_weights``) get :data:`RANDOM_BANNER` on top and a short red
note beside every table of scores. Rendering uses numpy, OpenCV's colour maps and PIL only.
"""
from __future__ import annotations

import base64
import functools
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
from tagclip_cls.runtime.ids import inside_root
from tagclip_cls.core.images import find_image, load_rgb
from tagclip_cls.formats.tags import read_tag_records

from tagclip_cls.formats.mask_folder import read_cams
from tagclip_cls.formats.mask_png import IGNORE, read_label_png, voc_palette
from wsss.evaluation.results import read_results

MASK_PANELS = (("masks", "pseudo mask"), ("masks_crf", "pseudo mask + CRF"))
IGNORE_COLOUR = (224, 224, 192)
RANDOM_BANNER = ("random weights: tags and masks are meaningless; pass real CLIP weights "
                 "(--pretrained PATH, or make demo PRETRAINED=/path/to/ViT-B-16.pt) for real results")
RANDOM_NOTE = "random weights: these numbers mean nothing"
OVERLAY_FLOOR = 128  # the photo under an overlay is lifted to [OVERLAY_FLOOR, 255]


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
    random_weights: bool = False  # made with random CLIP weights: RANDOM_BANNER, and a note at every table
    settings: Sequence[tuple[str, str]] = ()  # (name, value) lines of the overview
    max_images: int | None = None
    display_side: int = 256  # longer side of every picture in the page, at most
    min_display_side: int = 160  # smaller pictures are enlarged to this longer side
    notes: Sequence[str] = field(default_factory=list)  # extra overview remarks


def label_colours() -> np.ndarray:
    """``256 x 3`` uint8 colours of label values: the VOC palette, ignore in light grey."""
    colours = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    colours[IGNORE] = IGNORE_COLOUR
    return colours


def display_size(height: int, width: int, side: int, smallest: int = 0) -> tuple[int, int]:
    """``(H, W)`` scaled so the longer side is at most ``side`` and at least ``smallest`` (capped
    at ``side``): large images fit the page, small ones are enlarged until they can be read."""
    longer = max(height, width)
    scale = min(max(longer, min(smallest, side)), side) / longer
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_picture(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """``array`` at ``size`` ``(H, W)``: nearest-neighbour for label maps (no invented labels),
    else area averaging to shrink and bilinear to enlarge."""
    if array.shape[:2] == size:
        return array
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if size[0] * size[1] < array.shape[0] * array.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(array, (size[1], size[0]), interpolation=interp)


def heat_colours(cam: np.ndarray) -> np.ndarray:
    """RGB uint8 of values in [0, 1] in OpenCV's JET colour map (0 dark blue, 1 dark red)."""
    heat = cv2.applyColorMap(np.clip(cam * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)


def lifted(rgb: np.ndarray) -> np.ndarray:
    """The photo mapped from [0, 255] to [OVERLAY_FLOOR, 255] (float): colours blended over it
    stay bright and distinct on dark photos, where plain blending would darken them to black."""
    return OVERLAY_FLOOR + rgb.astype(np.float32) * ((255 - OVERLAY_FLOOR) / 255)


def cam_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A CAM in [0, 1] as a JET heat map blended over the (same-sized) lifted RGB image."""
    return np.round(lifted(rgb) * (1 - alpha) + heat_colours(cam) * alpha).astype(np.uint8)


def region_borders(labels: np.ndarray) -> np.ndarray:
    """Boolean map of the pixels with a 4-neighbour of another label."""
    border = np.zeros(labels.shape, dtype=bool)
    rows, cols = labels[1:] != labels[:-1], labels[:, 1:] != labels[:, :-1]
    border[1:] |= rows
    border[:-1] |= rows
    border[:, 1:] |= cols
    border[:, :-1] |= cols
    return border


def mask_overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Label colours blended over the (same-sized) lifted RGB image, each region outlined in
    its pure colour, so regions stay apart whatever the photo's brightness."""
    colours = label_colours()[labels]
    out = np.round(lifted(rgb) * (1 - alpha) + colours * alpha).astype(np.uint8)
    border = region_borders(labels)
    out[border] = colours[border]
    return out


def _data_uri(rgb: np.ndarray, fmt: str, **options) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **options)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> str:
    """A ``data:`` URI of the image as base64 JPEG."""
    return _data_uri(rgb, "JPEG", quality=quality)


@functools.cache
def cam_scale() -> str:
    """HTML of the CAM colour scale: the JET bar from 0 to 1 (lossless PNG, so it shows the
    exact colours of the heat maps), labelled 0 and 1."""
    bar = heat_colours(np.repeat(np.linspace(0, 1, 128)[None], 8, axis=0))
    return (f'<div class="camscale"><span>0</span><img src="{_data_uri(bar, "PNG")}" '
            f'alt="CAM colour scale from 0 (blue) to 1 (red)"><span>1</span></div>')


def _random_note(inputs: ReportInputs) -> str:
    return f'<p class="random-note">{html.escape(RANDOM_NOTE)}</p>' if inputs.random_weights else ""


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


def _scores_table(record: dict, class_names: Sequence[str], note: str, top: int = 10) -> str:
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
    return (f'{note}<table class="scores"><tr><th>class</th><th>score</th><th></th></tr>{"".join(rows)}</table>'
            f"{tail}")


def _card(record: dict, inputs: ReportInputs, names: Sequence[str]) -> str:
    image_id = str(record["id"])
    rgb_full = load_rgb(find_image(inputs.images, image_id))
    size = display_size(*rgb_full.shape[:2], inputs.display_side, inputs.min_display_side)
    rgb = resize_picture(rgb_full, size, nearest=False)
    tag_names = [inputs.class_names[t] for t in record["tags"] if t < len(inputs.class_names)]
    head = (f'<div class="row">{_figure(encode_jpeg(rgb), image_id, kind="photo")}<div>'
            f'<p><b>tags:</b> {html.escape(", ".join(tag_names)) or "<i>none</i>"}</p>'
            f"{_scores_table(record, inputs.class_names, _random_note(inputs))}</div></div>")
    head = f'<div class="block"><h4>image and tag scores</h4>{head}</div>'
    parts = [head]
    stage2 = Path(inputs.stage2) if inputs.stage2 else None
    cam_path = stage2 / "cams" / f"{image_id}.npz" if stage2 else None
    if cam_path is not None and cam_path.is_file():
        keys, cams = read_cams(cam_path, len(inputs.class_names))
        figures = [_figure(encode_jpeg(cam_overlay(rgb, resize_picture(cams[i].astype(np.float32), size, False))),
                           f"CAM: {inputs.class_names[k] if k < len(inputs.class_names) else k}", kind="cam")
                   for i, k in enumerate(keys)]
        body = (f'{cam_scale()}<div class="row">{"".join(figures)}</div>' if figures
                else '<p class="muted">no tags, no CAMs</p>')
        parts.append(f'<div class="block"><h4>CAM heat maps</h4>{body}</div>')
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
        small = resize_picture(labels, size, nearest=True)
        figures.append(_figure(encode_jpeg(mask_overlay(rgb, small)), title, _legend(labels, names), kind="mask"))
    if figures:
        parts.append(f'<div class="block"><h4>label maps</h4><div class="row">{"".join(figures)}</div></div>')
    return (f'<section class="card" id="img-{html.escape(image_id)}"><h3>{html.escape(image_id)}</h3>'
            f'<div class="row">{"".join(parts)}</div></section>')


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _table_html(title: str, path: Path, note: str) -> str:
    """One results file (:mod:`wsss.evaluation.results`) as summary line and per-class table;
    classes without ground-truth pixels are left out (as they are of the means)."""
    record = read_results(path)
    summary = [(key, record[key]) for key in ("mIoU", "mAcc", "aAcc")]
    rows = [(name, row["IoU"], row["Acc"]) for name, row in record["per_class"].items() if row["gt_pixels"]]
    head = " · ".join(f"{html.escape(k)} <b>{_pct(v)}</b>" for k, v in summary)
    body = "".join(f"<tr><td>{html.escape(str(n))}</td><td>{_pct(i)}</td><td>{_pct(a)}</td></tr>" for n, i, a in rows)
    return (f'<div class="miou"><h3>{html.escape(title)}</h3>{note}<p>{head}</p>'
            f"<table><tr><th>class</th><th>IoU %</th><th>Acc %</th></tr>{body}</table></div>")


CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;max-width:1400px}
.banner{background:#c62828;color:#fff;padding:12px 16px;font-size:18px;font-weight:bold;border-radius:4px;
margin:0 0 8px}
.random-note{color:#c62828;font-weight:bold;font-size:13px;margin:4px 0}
.camscale{display:flex;align-items:center;gap:4px;font-size:12px;margin:0 0 4px}
.camscale img{width:128px;height:10px;border:1px solid #555}
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
    records = read_tag_records(inputs.tags, len(inputs.class_names))
    if inputs.max_images is not None:
        records = records[:inputs.max_images]
    names = list(inputs.label_names or ("background", *inputs.class_names))
    banners = ([RANDOM_BANNER] if inputs.random_weights else []) + ([inputs.banner] if inputs.banner else [])
    banner = "".join(f'<div class="banner">{html.escape(b)}</div>' for b in banners)
    settings = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in inputs.settings)
    notes = "".join(f"<p>{html.escape(n)}</p>" for n in inputs.notes)
    overview_rows = "".join(
        f'<tr><td><a href="#img-{html.escape(str(r["id"]))}">{html.escape(str(r["id"]))}</a></td><td>'
        f'{html.escape(", ".join(inputs.class_names[t] for t in r["tags"] if t < len(inputs.class_names)))}</td></tr>'
        for r in records)
    cards = "".join(_card(r, inputs, names) for r in records)
    tables = [(t, Path(p)) for t, p in inputs.tables if Path(p).is_file()]
    tables_html = ("".join(_table_html(t, p, _random_note(inputs)) for t, p in tables)
                   or '<p class="muted">no ground truth, no mIoU tables</p>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(inputs.title)}</title>'
            f"<style>{CSS}</style></head><body>{banner}<h1>{html.escape(inputs.title)}</h1>"
            f'<section id="overview"><h2>Overview</h2><table>{settings}</table>{notes}'
            f"<p>{len(records)} images</p><table><tr><th>image</th><th>tags</th></tr>{overview_rows}</table></section>"
            f'<section id="images"><h2>Images</h2>{cards}</section>'
            f'<section id="miou"><h2>mIoU</h2>{tables_html}</section></body></html>\n')


def write_report(path: str | os.PathLike, inputs: ReportInputs, root: str | os.PathLike | None = None) -> Path:
    """Render the report and write it to ``path`` atomically, inside ``root`` (``None``: the
    report's own folder); returns the path."""
    inside_root(Path(path).parent if root is None else root, path)  # before the minutes of rendering
    text = render_report(inputs)
    write_text_atomic(path, text, root)
    return Path(path)
