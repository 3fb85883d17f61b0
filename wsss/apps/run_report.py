"""The HTML report (:mod:`wsss.apps.report`) of any run's output folders (``tools/make_report.py``).

Stage 1's folder is found through :class:`TagFolder` (its ``tags.jsonl`` or ``tags.txt`` may be
given instead: it stands for the folder it lies in), stage 2's through :class:`MaskFolder`.
The class list comes from ``--dataset`` / ``--classes`` and must be the one stage 1 ran with
(checked against its run config and the records' score counts). When stage 1's run config or
stage 2's ``config.json`` says ``random_weights``, the report carries the red banner.

Every path the user gives is checked before anything is rendered, so that a mistake is one
:class:`UserError` naming the file and no report is written; the checks need neither torch nor
OpenCV (the renderer is imported after them), so they answer at once.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from tagclip_cls.core.presets import Preset, coarse27_names, make_preset
from tagclip_cls.formats.mask_folder import CAMS, MaskFolder
from tagclip_cls.formats.tags import TagFolder
from tagclip_cls.runtime.errors import UserError

if TYPE_CHECKING:
    from wsss.apps.report import ReportInputs


@dataclass
class RunReportOptions:
    """Settings of :func:`make_run_report` (``tools/make_report.py``'s flags)."""

    tags: str  # stage 1's output folder (or its tags.jsonl / tags.txt)
    img_root: str
    out: str  # the HTML file
    masks: str | None = None  # stage 2's output folder
    seg: str | None = None  # folder of segmenter ID.png label maps
    tables: Sequence[str] = ()  # results JSON files
    dataset: str | None = None
    classes: str | None = None
    background: str | None = None
    max_images: int | None = None


def tag_folder(path: str | os.PathLike) -> TagFolder:
    """Stage 1's output folder holding ``tags.jsonl``; its ``tags.jsonl`` or ``tags.txt`` stands
    for the folder it lies in."""
    path = Path(path)
    if path.is_file():
        folder = TagFolder(path.parent)
        if path.name not in (folder.jsonl.name, folder.txt.name):
            raise UserError(f"{path}: --tags expects stage 1's output folder (holding tags.jsonl), not a file")
        path = folder.root
    elif not path.is_dir():
        raise UserError(f"{path}: stage-1 output folder not found")
    folder = TagFolder(path)
    if not folder.jsonl.is_file():
        raise UserError(f"{folder.jsonl}: not found; --tags expects stage 1's output folder (tools/gen_tags.py --out)")
    return folder


def mask_folder(path: str | os.PathLike) -> MaskFolder:
    """Stage 2's output folder: one holding ``cams/``, ``masks/`` or ``masks_crf/``."""
    folder = MaskFolder(path)
    if not folder.root.is_dir():
        raise UserError(f"{folder.root}: stage-2 output folder not found")
    subfolders = (folder.root / CAMS, folder.label_dir(crf=False), folder.label_dir(crf=True))
    if not any(d.is_dir() for d in subfolders):
        names = ", ".join(f"{d.name}/" for d in subfolders)
        raise UserError(f"{folder.root}: not a stage-2 output folder (no {names} in it)")
    return folder


def read_run_config(path: Path) -> dict | None:
    """A stage's recorded settings, or ``None`` when the folder has none (older outputs)."""
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read run config ({exc.strerror or exc})") from None
    except ValueError:
        raise UserError(f"{path}: damaged run config (not JSON)") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: damaged run config (not a JSON object)")
    return config


def stage_configs(tags: TagFolder, masks: MaskFolder | None) -> dict[Path, dict | None]:
    """Stage 1's run config and (with ``masks``) stage 2's ``config.json`` by path; ``None``
    where a folder has none."""
    paths = [tags.run_config] + ([masks.config] if masks else [])
    return {path: read_run_config(path) for path in paths}


def random_weights_used(configs: dict[Path, dict | None]) -> bool:
    """Whether any of the :func:`stage_configs` records random CLIP weights."""
    return any(bool(c and c.get("random_weights")) for c in configs.values())


def check_classes(tags: TagFolder, configs: dict[Path, dict | None], preset: Preset) -> None:
    """Refuse a class list other than the one the outputs were made for (names would be wrong)."""
    for path, config in configs.items():
        if config is not None and "classes" in config and list(config["classes"]) != list(preset.classes):
            raise UserError(f"{path}: the outputs were made for other classes ({len(config['classes'])}) than "
                            f"{preset.name}'s {len(preset.classes)}; pass the --dataset / --classes the stages "
                            "ran with")
    for record in tags.records():
        if len(record["scores"]) != len(preset.classes):
            raise UserError(f"{tags.jsonl}: image {record['id']!r} has {len(record['scores'])} class scores, "
                            f"{preset.name} {len(preset.classes)} classes; pass the --dataset / --classes "
                            "stage 1 ran with")


def _weights(config: dict | None) -> str:
    return str(config.get("model", "not recorded")) if config else "unknown (no run config)"


def check_paths(opts: RunReportOptions) -> None:
    """One-line errors for the flags that do not name what they should."""
    if not Path(opts.img_root).is_dir():
        raise UserError(f"{opts.img_root}: image folder not found")
    if opts.seg and not Path(opts.seg).is_dir():
        raise UserError(f"{opts.seg}: folder of segmenter predictions not found")
    for table in opts.tables:
        if not Path(table).is_file():
            raise UserError(f"{table}: results file not found")
    if Path(opts.out).is_dir():
        raise UserError(f"{opts.out}: --out is a folder; name the HTML file to write")
    if opts.max_images is not None and opts.max_images < 1:
        raise UserError(f"--max-images {opts.max_images}: must be at least 1")


def run_report_inputs(opts: RunReportOptions) -> ReportInputs:
    """What the report of ``opts``' folders shows, every input checked."""
    check_paths(opts)
    tags = tag_folder(opts.tags)
    masks = mask_folder(opts.masks) if opts.masks else None
    preset = make_preset(opts.dataset, opts.classes, opts.background)
    configs = stage_configs(tags, masks)
    check_classes(tags, configs, preset)
    coarse = preset.clip_es.label_space == "coarse27"
    settings = [("images", str(opts.img_root)), ("classes", f"{preset.name}: {len(preset.classes)} classes"),
                ("stage 1", f"{tags.root} (weights: {_weights(configs[tags.run_config])})"),
                ("stage 2", f"{masks.root} (weights: {_weights(configs[masks.config])})" if masks else "not given"),
                ("segmenter predictions", str(opts.seg) if opts.seg else "not given")]
    notes = [f"first {opts.max_images} images of {tags.jsonl} shown"] if opts.max_images else []
    from wsss.apps.report import ReportInputs  # torch (image loading) and OpenCV: after the checks
    return ReportInputs(
        images=opts.img_root, tags=tags.jsonl, class_names=preset.classes,
        stage2=masks.root if masks else None, predictions=opts.seg,
        tables=[(str(t), t) for t in opts.tables], label_names=coarse27_names(preset) if coarse else None,
        title=f"classify-then-segment report: {preset.name}", random_weights=random_weights_used(configs),
        settings=settings, max_images=opts.max_images, notes=notes)


def make_run_report(opts: RunReportOptions) -> Path:
    """Write the report of ``opts``' folders to ``opts.out`` (atomically); returns its path."""
    inputs = run_report_inputs(opts)
    from wsss.apps.report import write_report

    return write_report(opts.out, inputs)
