"""``make demo``: :func:`~wsss.apps.pipeline.run_pipeline` on five photographs scikit-image
ships, then the tiny segmenter's predictions, the horse's mIoU tables and the HTML report.

The images (a cat, an astronaut, a cup of coffee, a rocket and a horse silhouette) need no
download; the class list is open-vocabulary. CLIP weights come from ``--pretrained PATH``,
else open_clip's 'openai' ViT-B-16 when the network allows, else random ViT-B/16 weights,
announced on the console and as a red banner in the report, since their tags and masks mean
nothing. The horse silhouette is its own ground truth, so its mIoU tables are real checks of
the plumbing, not of the method.

What is the demo's own is small: the sample inputs, the choice of weights, the tiny DeepLab's
settings (``cfg_options`` of ``configs/tiny``, handed to the pipeline's stage 3), predicting the
samples with its checkpoint and scoring against the open-vocabulary class list (the pipeline's
evaluation needs a dataset preset). Every stage runs, resumes and is skipped by the pipeline.

Layout under ``out`` (default ``demo_out/``)::

    images/ID.jpg, ids.txt, classes.txt, background.txt, gt/horse.png
    inputs.json       weights, image size and segmenter settings the outputs were made with
    weights/          random checkpoint (when used; 586 MB for ViT-B/16)
    stage1/           tags.jsonl, tags.txt
    stage2/           cams/, masks/, masks_crf/
    stage3/           the tiny segmenter's work dir (iter_N.pth), pred/ID.png
    eval/             mIoU tables (JSON) on the horse
    report.html
"""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.resources import config_file
from tagclip_cls.runtime.atomic_io import atomic_write, write_json_atomic, write_text_atomic
from tagclip_cls.runtime.ids import inside_root
from tagclip_cls.core.models import load_clip
from tagclip_cls.core.random_weights import save_random_openai_checkpoint
from tagclip_cls.formats.mask_png import write_label_png

from wsss.evaluation.miou import evaluate_ids
from wsss.evaluation.results import write_results
from wsss.apps.pipeline import PipelineLayout, PipelineOptions, StageStatus, final_checkpoint, run_pipeline
from wsss.apps.report import RANDOM_BANNER, ReportInputs, write_report

log = logging.getLogger(__name__)

TINY_SEG_CONFIG = config_file("tiny", "deeplabv2_r18-tiny_voc-64x64.py")
CLASSES = ("cat", "person", "rocket", "coffee cup", "horse")
BACKGROUND = ("sky", "grass", "wall", "ground", "tree", "building", "road", "table")
SAMPLES = {"cat": "chelsea", "astronaut": "astronaut", "coffee": "coffee", "rocket": "rocket", "horse": "horse"}
IDS = "ids.txt"  # the samples' split file: stages 1 and 2 and the segmenter's training read it
HORSE_COLOUR, HORSE_BACKDROP = (96, 62, 36), (226, 232, 216)


@dataclass
class DemoOptions:
    """Settings of :func:`run_demo` (the tool's flags; the last three are for tests)."""

    out: str = "demo_out"
    pretrained: str | None = None  # checkpoint PATH or open_clip tag; None: try 'openai', else random
    random_weights: bool = False
    device: str = "cpu"  # stages 1 and 2; the segmenter trains on the CPU
    precision: str = "fp32"
    attention: str | None = None  # None: see runtime.precision.resolve_attention
    train_iters: int = 300
    seg_size: int = 64  # crop side the segmenter trains and predicts at
    skip_train: bool = False
    crf: bool = True
    overwrite: bool = False
    cache_dir: str | None = None
    image_side: int | None = None  # scale the samples down to this longer side
    random_dims: dict[str, int] = field(default_factory=dict)  # random_openai_state_dict sizes
    progress: bool = True


@dataclass(frozen=True)
class Weights:
    pretrained: str  # what the stages get as --pretrained
    random: bool
    description: str


@dataclass
class DemoResult:
    report: Path
    weights: Weights
    trained: bool
    notes: list[str]
    stages: list[StageStatus]  # the pipeline's, in order


def sample_images(image_side: int | None = None) -> dict[str, np.ndarray]:
    """The demo's RGB images by id, from ``skimage.data`` (the horse silhouette coloured in)."""
    import skimage.data

    images = {}
    for image_id, name in SAMPLES.items():
        array = getattr(skimage.data, name)()
        if name == "horse":  # boolean, False on the horse
            array = np.where(array[..., None], np.uint8(HORSE_BACKDROP), np.uint8(HORSE_COLOUR))
        image = Image.fromarray(array)
        if image_side and max(image.size) > image_side:
            image.thumbnail((image_side, image_side), Image.BILINEAR)
        images[image_id] = np.asarray(image)
    return images


def horse_ground_truth(shape: tuple[int, int]) -> np.ndarray:
    """Label map of the horse image at ``shape``: horse (class index + 1) on background 0."""
    import skimage.data

    silhouette = Image.fromarray(~skimage.data.horse())
    on_horse = np.asarray(silhouette.resize((shape[1], shape[0]), Image.NEAREST))
    return np.where(on_horse, CLASSES.index("horse") + 1, 0).astype(np.uint8)


def write_inputs(out: Path, image_side: int | None) -> list[str]:
    """Write images, their split file, class lists and the horse ground truth; returns the image ids."""
    images = sample_images(image_side)
    for image_id, rgb in images.items():
        atomic_write(out / "images" / f"{image_id}.jpg",
                     lambda f, rgb=rgb: Image.fromarray(rgb).save(f, format="JPEG", quality=95), "wb", out)
    write_text_atomic(out / IDS, "\n".join(images) + "\n", out)
    write_text_atomic(out / "classes.txt", "\n".join(CLASSES) + "\n", out)
    write_text_atomic(out / "background.txt", "\n".join(BACKGROUND) + "\n", out)
    write_label_png(out / "gt" / "horse.png", horse_ground_truth(images["horse"].shape[:2]), out)
    return list(images)


def _loud(message: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!!! {message}\n{bar}\n", file=sys.stderr, flush=True)


def resolve_weights(opts: DemoOptions, out: Path) -> Weights:
    """The CLIP weights the stages use: given, downloaded, or random (announced loudly)."""
    if opts.pretrained and not opts.random_weights:
        return Weights(opts.pretrained, False, f"pretrained {opts.pretrained}")
    if not opts.random_weights:
        try:  # fails within seconds where the hub can't be reached
            load_clip(None, "openai")
            return Weights("openai", False, "open_clip ViT-B-16 'openai' weights")
        except UserError as err:
            reason = str(err)
        _loud(f"could not get pretrained CLIP weights ({reason}); falling back to RANDOM weights. "
              f"{RANDOM_BANNER}")
    path = out / "weights" / ("random_vit_b16.pt" if not opts.random_dims else
                              "random_" + "_".join(f"{k}{v}" for k, v in sorted(opts.random_dims.items())) + ".pt")
    if not path.is_file():
        save_random_openai_checkpoint(path, **opts.random_dims)
    return Weights(str(path), True, f"RANDOM weights ({path.name})")


def score(pred_dir: Path, layout: PipelineLayout, name: str) -> Path | None:
    """Score ``pred_dir``'s label maps against the horse's ground truth into ``eval/NAME.json``
    (:mod:`wsss.evaluation.results` schema, labels background + :data:`CLASSES`); returns the
    table's path, ``None`` where no prediction has ground truth."""
    gt_dir = layout.root / "gt"
    ids = [p.stem for p in sorted(gt_dir.glob("*.png")) if (pred_dir / p.name).is_file()]
    if not ids:
        return None
    table = layout.eval / f"{name}.json"
    write_results(evaluate_ids(pred_dir, gt_dir, ids, ("background", *CLASSES), dataset="demo"), table, layout.root)
    return table


def stage3_available() -> str | None:
    """None when mmseg can train here, else why not."""
    if importlib.util.find_spec("mmcv") is None:
        return "mmcv is not installed (run `make install`)"
    try:
        import mmcv.ops  # noqa: F401
        import mmseg  # noqa: F401
    except Exception as exc:  # a broken build raises anything from ImportError to OSError
        return f"mmcv/mmseg cannot be imported ({type(exc).__name__}: {exc})"
    return None


def segmenter_options(size: int, iters: int) -> dict[str, Any]:
    """``cfg_options`` fitting the tiny DeepLab config to the demo: the samples and :data:`IDS`
    under the pipeline's ``data_root`` (the output folder), the demo's labels, ``iters``
    iterations on ``size`` pixel crops, and no validation (the horse is scored from predictions)."""
    from mmengine.config import Config

    config = Config.fromfile(str(TINY_SEG_CONFIG), import_custom_modules=False)
    sized = {"RandomResize": "scale", "RandomCrop": "crop_size"}  # the train pipeline's steps of a fixed size
    train_steps = [dict(step, **({sized[step.type]: (size, size)} if step.type in sized else {}))
                   for step in config.train_dataloader.dataset.pipeline]
    return {"train_dataloader.dataset.data_prefix.img_path": "images",
            "train_dataloader.dataset.ann_file": IDS,
            "train_dataloader.dataset.pipeline": train_steps,
            "model.decode_head.num_classes": len(CLASSES) + 1,
            "model.data_preprocessor.size": (size, size),
            "train_cfg.max_iters": iters, "train_cfg.val_interval": iters,
            "param_scheduler.0.end": iters,
            "default_hooks.checkpoint.interval": iters,
            "default_hooks.logger.interval": max(1, min(50, iters // 4)),
            "custom_hooks": [],
            "test_pipeline": [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(size, size), keep_ratio=True),
                              dict(type="PackSegInputs")],
            **{f"{split}_{part}": None for split in ("val", "test") for part in ("dataloader", "cfg", "evaluator")}}


def pipeline_options(opts: DemoOptions, out: Path, weights: Weights, cfg_options: dict[str, Any] | None
                     ) -> PipelineOptions:
    """:func:`run_pipeline`'s settings for the demo: its samples, classes, weights and device;
    stage 3 with the tiny DeepLab config and ``cfg_options`` (``None``: no stage 3); neither the
    pipeline's evaluation (it needs a dataset preset) nor its report (the demo's shows predictions)."""
    return PipelineOptions(
        img_root=str(out / "images"), out=str(out), split=str(out / IDS), classes=str(out / "classes.txt"),
        background=str(out / "background.txt"), pretrained=weights.pretrained, device=opts.device,
        precision=opts.precision, attention=opts.attention, loader_threads=0, crf_masks=opts.crf, crf_workers=0,
        cache_dir=opts.cache_dir, seg_config=str(TINY_SEG_CONFIG), data_root=str(out),
        cfg_options=cfg_options or {}, skip_train=cfg_options is None, report_images=0,
        overwrite=opts.overwrite, progress=opts.progress)


def check_record(out: Path, opts: DemoOptions, record: dict[str, Any]) -> DemoOptions:
    """Compare ``record`` (weights, image side, segmenter settings) with ``inputs.json``, what
    ``out`` was made with, and write it there. Other weights or image sizes recompute everything
    (``opts`` with ``overwrite``); other segmenter settings train it from scratch, its work dir
    removed (the pipeline would resume the other run). A run without stage 3 keeps the record of
    the last one."""
    path = out / "inputs.json"
    try:
        before = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        before = {"unreadable": True}
    if before and not opts.overwrite and any(before.get(k) != record[k] for k in ("weights", "image_side")):
        log.warning("%s was made with other weights or image sizes: recomputing everything", out)
        opts = replace(opts, overwrite=True)
    if record["segmenter"] is None:
        record = {**record, "segmenter": before.get("segmenter")}
    elif before.get("segmenter") not in (None, record["segmenter"]) and not opts.overwrite:
        work_dir = inside_root(out, PipelineLayout(out).stage3)
        log.warning("%s was trained with other settings: training from scratch", work_dir)
        shutil.rmtree(work_dir, ignore_errors=True)
    write_json_atomic(path, record, out)
    return opts


def predict(layout: PipelineLayout, ids: Sequence[str], cfg_options: dict[str, Any]) -> Path:
    """Label the samples with the segmenter's last checkpoint into ``stage3/pred``; returns that folder."""
    from wsss.seg.api import Segmenter
    from wsss.seg.runner import load_config

    cfg = load_config(TINY_SEG_CONFIG, cfg_options=cfg_options)
    checkpoint = final_checkpoint(str(TINY_SEG_CONFIG), cfg_options, layout.stage3)
    segmenter = Segmenter.from_checkpoint(cfg, checkpoint, device="cpu")
    pred_dir = layout.stage3 / "pred"
    for image_id in ids:
        write_label_png(pred_dir / f"{image_id}.png", segmenter(layout.root / "images" / f"{image_id}.jpg"),
                        layout.root)
    return pred_dir


def run_demo(opts: DemoOptions, on_stage: Callable[[StageStatus], None] = lambda s: None) -> DemoResult:
    """Run the pipeline on the samples, predict and score them, and write ``report.html``;
    returns what was made. ``on_stage`` gets each pipeline stage's status when it is over."""
    out = Path(opts.out)
    layout = PipelineLayout(out)
    ids = write_inputs(out, opts.image_side)
    weights = resolve_weights(opts, out)
    log.info("demo weights: %s", weights.description)
    why_not = "--skip-train given" if opts.skip_train else stage3_available()
    cfg_options = segmenter_options(opts.seg_size, opts.train_iters) if why_not is None else None
    segmenter = {"iters": opts.train_iters, "size": opts.seg_size} if cfg_options is not None else None
    opts = check_record(out, opts, {"weights": asdict(weights), "image_side": opts.image_side, "segmenter": segmenter})
    stages = run_pipeline(pipeline_options(opts, out, weights, cfg_options), on_stage)
    notes = ["Ground truth exists for the horse silhouette only; its mIoU tables check the plumbing."]
    masks = (("pseudo masks", layout.stage2.label_dir(crf=False)),
             ("pseudo masks + CRF", layout.stage2.label_dir(crf=True)))
    scored = [(f"{title} (horse)", score(folder, layout, folder.name)) for title, folder in masks]
    pred_dir = None
    if cfg_options is not None:
        pred_dir = predict(layout, ids, cfg_options)
        scored.append(("segmenter (horse)", score(pred_dir, layout, "segmenter")))
    else:
        notes.append(f"Stage 3 (segmenter) skipped: {why_not}.")
        log.warning("stage 3 skipped: %s", why_not)
    settings = [("CLIP weights", weights.description), ("classes", ", ".join(CLASSES)),
                ("background words", ", ".join(BACKGROUND)),
                ("segmenter", f"tiny DeepLabV2 R18, {opts.train_iters} iterations at {opts.seg_size}px"
                 if pred_dir else "not trained")]
    report = write_report(out / "report.html", ReportInputs(
        images=out / "images", tags=layout.stage1.jsonl, class_names=CLASSES, stage2=layout.stage2.root,
        predictions=pred_dir, tables=[(title, table) for title, table in scored if table is not None],
        title="classify-then-segment demo", random_weights=weights.random, settings=settings, notes=notes), out)
    if weights.random:
        _loud(RANDOM_BANNER)
    return DemoResult(report=report, weights=weights, trained=pred_dir is not None, notes=notes, stages=stages)
