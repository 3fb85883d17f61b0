"""``make demo``: the three stages on five photographs scikit-image ships, and an HTML report.

The images (a cat, an astronaut, a cup of coffee, a rocket and a horse silhouette) need no
download; the class list is open-vocabulary. CLIP weights come from ``--pretrained PATH``,
else open_clip's 'openai' ViT-B-16 when the network allows, else random ViT-B/16 weights,
announced on the console and as a red banner in the report, since their tags and masks mean
nothing. The horse silhouette is its own ground truth, so its mIoU tables are real checks of
the plumbing, not of the method.

Layout under ``out`` (default ``demo_out/``)::

    images/ID.jpg, classes.txt, background.txt, gt/horse.png
    inputs.json       weights and image size of the outputs (a change recomputes everything)
    weights/          random checkpoint (when used; 586 MB for ViT-B/16)
    stage1/           tags.jsonl, tags.txt
    stage2/           cams/, masks/, masks_crf/
    stage3/           SIZEpx_Niters/ (the tiny segmenter's work dir), pred/ID.png
    eval/             mIoU tables (JSON) on the horse
    report.html
"""
from __future__ import annotations

import importlib.util
import json
import logging
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.atomic_io import atomic_write, write_json_atomic, write_text_atomic
from tagclip_cls.core.models import load_clip
from tagclip_cls.core.random_weights import save_random_openai_checkpoint
from tagclip_cls.tagging.run import TagRunOptions, run_stage1

from wsss.evaluation.miou import evaluate_ids
from wsss.evaluation.results import write_results
from tagclip_cls.formats.mask_folder import MaskFolder
from tagclip_cls.formats.tags import TagFolder
from tagclip_cls.formats.mask_png import write_label_png
from wsss.masks.run import MaskRunOptions, run_stage2
from wsss.apps.report import RANDOM_BANNER, ReportInputs, write_report

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
TINY_SEG_CONFIG = REPO / "configs" / "tiny" / "deeplabv2_r18-tiny_voc-64x64.py"
CLASSES = ("cat", "person", "rocket", "coffee cup", "horse")
BACKGROUND = ("sky", "grass", "wall", "ground", "tree", "building", "road", "table")
SAMPLES = {"cat": "chelsea", "astronaut": "astronaut", "coffee": "coffee", "rocket": "rocket", "horse": "horse"}
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
    """Write images, class lists and the horse ground truth; returns the image ids."""
    images = sample_images(image_side)
    for image_id, rgb in images.items():
        atomic_write(out / "images" / f"{image_id}.jpg",
                     lambda f, rgb=rgb: Image.fromarray(rgb).save(f, format="JPEG", quality=95), "wb", out)
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


def score_masks(pred_dir: Path, gt_dir: Path, names: Sequence[str]) -> dict | None:
    """Results record (:mod:`wsss.evaluation.results` schema) of the predictions that have
    ground truth; ``None`` when none has."""
    ids = [p.stem for p in sorted(gt_dir.glob("*.png")) if (pred_dir / p.name).is_file()]
    if not ids:
        return None
    return evaluate_ids(pred_dir, gt_dir, ids, names, dataset="demo")


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


def seg_config(images: Path, masks: Path, ids: Sequence[str], work_dir: Path, num_labels: int,
               iters: int, size: int):
    """The tiny DeepLab config, pointed at the demo's images and pseudo masks, without validation."""
    from wsss.seg.runner import load_config

    split = work_dir / "train.txt"
    write_text_atomic(split, "\n".join(ids) + "\n", work_dir)
    cfg = load_config(TINY_SEG_CONFIG, pseudo_masks=str(masks), work_dir=str(work_dir), cfg_options={
        "train_dataloader.dataset.data_root": str(images.parent),
        "train_dataloader.dataset.data_prefix": dict(img_path=str(images.resolve()), seg_map_path=str(masks.resolve())),
        "train_dataloader.dataset.ann_file": str(split.resolve()),
        "model.decode_head.num_classes": num_labels,
        "train_cfg.max_iters": iters, "train_cfg.val_interval": iters,
        "param_scheduler.0.end": iters,
        "default_hooks.checkpoint.interval": iters,
        "default_hooks.logger.interval": max(1, min(50, iters // 4))})
    for name in ("val", "test"):
        cfg[f"{name}_dataloader"] = cfg[f"{name}_cfg"] = cfg[f"{name}_evaluator"] = None
    cfg.custom_hooks = []
    cfg.model.data_preprocessor.size = (size, size)
    for step in cfg.train_dataloader.dataset.pipeline:
        if step.type == "RandomResize":
            step.scale = (size, size)
        elif step.type == "RandomCrop":
            step.crop_size = (size, size)
    cfg.test_pipeline = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(size, size), keep_ratio=True),
                         dict(type="PackSegInputs")]
    return cfg


def train_and_predict(out: Path, ids: Sequence[str], masks: Path, opts: DemoOptions) -> Path:
    """Train the tiny segmenter on the pseudo masks (unless its checkpoint exists) and write its
    label maps to ``stage3/pred``; returns that folder."""
    from wsss.seg.api import Segmenter
    from wsss.seg.runner import train

    work_dir = out / "stage3" / f"{opts.seg_size}px_{opts.train_iters}iters"  # other settings: another run
    checkpoint = work_dir / f"iter_{opts.train_iters}.pth"
    cfg = seg_config(out / "images", masks, ids, work_dir, len(CLASSES) + 1, opts.train_iters, opts.seg_size)
    if opts.overwrite or not checkpoint.is_file():
        train(cfg)
    segmenter = Segmenter.from_checkpoint(cfg, checkpoint, device="cpu")
    pred_dir = out / "stage3" / "pred"
    for image_id in ids:
        write_label_png(pred_dir / f"{image_id}.png", segmenter(out / "images" / f"{image_id}.jpg"), out)
    return pred_dir


def run_demo(opts: DemoOptions) -> DemoResult:
    """Run the stages on the samples and write ``report.html``; returns what was made."""
    out = Path(opts.out)
    ids = write_inputs(out, opts.image_side)
    weights = resolve_weights(opts, out)
    log.info("demo weights: %s", weights.description)
    inputs = {"weights": asdict(weights), "image_side": opts.image_side}
    record = out / "inputs.json"
    if record.is_file() and json.loads(record.read_text(encoding="utf-8")) != inputs and not opts.overwrite:
        log.warning("%s was made with other weights or image sizes: recomputing everything", out)
        opts = replace(opts, overwrite=True)
    write_json_atomic(record, inputs, out)
    common = dict(img_root=str(out / "images"), classes=str(out / "classes.txt"),
                  background=str(out / "background.txt"), pretrained=weights.pretrained,
                  device=opts.device, precision=opts.precision, attention=opts.attention, cache_dir=opts.cache_dir,
                  overwrite=opts.overwrite)
    tags = TagFolder(out / "stage1")
    run_stage1(TagRunOptions(out=str(tags.root), loader_threads=0, **common))
    run_stage2(MaskRunOptions(tags=str(tags.txt), out=str(out / "stage2"), crf=opts.crf,
                              crf_workers=0, progress=opts.progress, **common))
    masks = MaskFolder(out / "stage2").label_dir(crf=opts.crf)
    names = ("background", *CLASSES)
    notes = ["Ground truth exists for the horse silhouette only; its mIoU tables check the plumbing."]
    tables: list[tuple[str, Path]] = []
    for title, crf in (("pseudo masks", False), ("pseudo masks + CRF", True)):
        folder = MaskFolder(out / "stage2").label_dir(crf)
        table = score_masks(folder, out / "gt", names)
        if table is not None:
            write_results(table, out / "eval" / f"{folder.name}.json", out)
            tables.append((f"{title} (horse)", out / "eval" / f"{folder.name}.json"))
    pred_dir = None
    why_not = "--skip-train given" if opts.skip_train else stage3_available()
    if why_not is None:
        pred_dir = train_and_predict(out, ids, masks, opts)
        table = score_masks(pred_dir, out / "gt", names)
        if table is not None:
            write_results(table, out / "eval" / "segmenter.json", out)
            tables.append(("segmenter (horse)", out / "eval" / "segmenter.json"))
    else:
        notes.append(f"Stage 3 (segmenter) skipped: {why_not}.")
        log.warning("stage 3 skipped: %s", why_not)
    settings = [("CLIP weights", weights.description), ("classes", ", ".join(CLASSES)),
                ("background words", ", ".join(BACKGROUND)),
                ("segmenter", f"tiny DeepLabV2 R18, {opts.train_iters} iterations at {opts.seg_size}px"
                 if pred_dir else "not trained")]
    report = write_report(out / "report.html", ReportInputs(
        images=out / "images", tags=tags.jsonl, class_names=CLASSES, stage2=out / "stage2",
        predictions=pred_dir, tables=tables, title="classify-then-segment demo",
        random_weights=weights.random, settings=settings, notes=notes), out)
    if weights.random:
        _loud(RANDOM_BANNER)
    return DemoResult(report=report, weights=weights, trained=pred_dir is not None, notes=notes)
