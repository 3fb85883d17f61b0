"""All stages on one dataset with one call, resumable stage by stage.

Layout under ``out``::

    stage1/   tags.jsonl, tags.txt (+ metrics.json when the split has labels)
    stage2/   cams/, masks/, masks_crf/ (every pixel: what eval/ scores), masks_crf_conf0.95/
              (stage 3's training labels: pixels whose CRF confidence is below --ignore-below are
              255, CLIP-ES's confidence-guided labels)
    stage3/   the segmenter's work dir (checkpoints, results_val.json/.md)
    eval/     masks.{json,md}, masks_crf.{json,md}: pseudo masks against --gt-masks
    report.html

A stage whose outputs are complete is skipped once its folder's settings and weights are found
to match this run's (a mismatch is refused, as by the stage's tool); an incomplete one is run
again and resumes on its own (stage 1's part files, stage 2's per-image files, stage 3's last checkpoint). The
evaluation is redone whenever stage 2 ran, so its tables always describe the masks on disk.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, TypeVar

from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.atomic_io import write_text_atomic
from tagclip_cls.core.images import find_image
from tagclip_cls.core.presets import Preset
from tagclip_cls.tagging.resumable import collect_entries
from tagclip_cls.formats.splits import read_split
from tagclip_cls.core.presets import coarse27_names, make_preset
from tagclip_cls.tagging.api import TagChoices
from tagclip_cls.tagging.run import TagRunOptions, run_stage1

from wsss.evaluation.miou import evaluate_dirs
from wsss.evaluation.results import read_results, write_results
from tagclip_cls.formats.mask_folder import MaskFolder
from tagclip_cls.formats.tags import TagFolder
from wsss.masks.api import MaskChoices, MaskOptions
from wsss.masks.crf import CRFJob, CRFWork, run_crf_batch
from wsss.masks.label_maps import LabelSpace
from wsss.masks.run import MaskRunOptions, run_stage2
from wsss.apps.report import ReportInputs, write_report
from wsss.apps.run_report import random_weights_used, stage_configs

log = logging.getLogger(__name__)

OptionsT = TypeVar("OptionsT")


@dataclass(kw_only=True)
class PipelineOptions(MaskChoices, TagChoices):
    """Settings of :func:`run_pipeline` (``tools/run_pipeline.py``'s flags): both CLIP stages'
    choices (:class:`TagChoices`, :class:`MaskChoices`: the fields they share mean the same in
    both stages) and the pipeline's own."""

    img_root: str
    out: str
    dataset: str | None = None
    classes: str | None = None
    background: str | None = None
    split: str | None = None
    model: str | None = None
    pretrained: str = "openai"
    batch_size: int = 1  # both CLIP stages
    threads: int | None = None  # stage 2's torch CPU threads
    crf_masks: bool = True  # stage 2 writes masks_crf/, and stage 3 trains on them
    # stage 3 trains on the CRF labels with pixels below this CRF confidence set to 255 (CLIP-ES's
    # 0.95; None: every pixel); stage 2's masks_crf/ keep every pixel, as the published evaluation
    ignore_below: float | None = 0.95
    crf_workers: int = 1  # pydensecrf processes, also scoring the masks
    cache_dir: str | None = None
    gt_masks: str | None = None
    seg_config: str | None = None
    data_root: str | None = None
    cfg_options: dict[str, Any] = field(default_factory=dict)  # stage-3 config overrides
    skip_train: bool = False
    report_images: int = 20
    strict: bool = False
    overwrite: bool = False  # recompute every stage
    progress: bool = True


@dataclass(frozen=True)
class StageStatus:
    name: str
    ran: bool
    detail: str

    def line(self) -> str:
        return f"[{self.name}] {'ran' if self.ran else 'skipped'}: {self.detail}"


@dataclass(frozen=True)
class PipelineLayout:
    root: Path

    @property
    def stage1(self) -> TagFolder:
        return TagFolder(self.root / "stage1")

    @property
    def stage2(self) -> MaskFolder:
        return MaskFolder(self.root / "stage2")

    @property
    def stage3(self) -> Path:
        return self.root / "stage3"

    @property
    def eval(self) -> Path:
        return self.root / "eval"


def stage1_missing(layout: PipelineLayout, expected: list[str]) -> list[str]:
    """Ids of ``expected`` with neither a tag record nor a 'skipped' entry in stage 1's outputs."""
    folder = layout.stage1
    if not folder.jsonl.is_file() or not folder.txt.is_file():
        return expected
    done = {record["id"] for record in folder.records()} | folder.skipped_ids()
    return [i for i in expected if i not in done]


def stage2_missing(layout: PipelineLayout, preset: Preset, crf: bool) -> list[str]:
    """Ids in stage 1's tags with a CAM file, mask or (with ``crf``) CRF mask missing."""
    out = layout.stage2
    return [e.image_id for e in read_split(layout.stage1.txt, preset.classes)
            if not (out.cam(e.image_id).is_file() and out.mask(e.image_id).is_file()
                    and (not crf or out.crf(e.image_id).is_file()))]


def final_checkpoint(config: str, cfg_options: dict[str, Any], work_dir: Path) -> Path:
    """Where the last checkpoint of an iteration-based config lands (``iter_MAX.pth``)."""
    from mmengine.config import Config

    cfg = Config.fromfile(config, import_custom_modules=False)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    max_iters = cfg.get("train_cfg", {}).get("max_iters")
    if max_iters is None:
        raise UserError(f"{config}: train_cfg.max_iters not set (only iteration-based configs are supported)")
    return work_dir / f"iter_{max_iters}.pth"


def stage_options(options_type: type[OptionsT], opts: PipelineOptions, **own: Any) -> OptionsT:
    """A stage's options: every one of its fields from the pipeline's field of that name, but for
    the paths the pipeline lays out itself (``own``)."""
    return options_type(**{f.name: own[f.name] if f.name in own else getattr(opts, f.name)
                           for f in fields(options_type)})


def _stage1(opts: PipelineOptions, layout: PipelineLayout, preset: Preset) -> StageStatus:
    expected = [e.image_id for e in collect_entries(opts.img_root, opts.split, preset.classes)]
    missing = expected if opts.overwrite else stage1_missing(layout, expected)  # --overwrite: all of them
    run_stage1(stage_options(TagRunOptions, opts, out=str(layout.stage1.root)), verify_only=not missing)
    if not missing:  # the folder's settings and weights were compared above
        return StageStatus("stage1", False, f"tags of all {len(expected)} images in {layout.stage1.root}")
    return StageStatus("stage1", True, f"{len(missing)} of {len(expected)} images had no tags yet")


def _stage2(opts: PipelineOptions, layout: PipelineLayout, preset: Preset) -> StageStatus:
    complete = not opts.overwrite and not stage2_missing(layout, preset, opts.crf_masks)
    summary = run_stage2(stage2_options(opts, layout), verify_only=complete)
    if complete:  # the folder's settings and weights were compared above
        return StageStatus("stage2", False, f"pseudo masks complete in {layout.stage2.root}")
    detail = (f"{summary.computed} images computed, {summary.existing} already done, {len(summary.failed)} failed"
              + (f", {summary.crf_written} CRF masks written" if opts.crf_masks else ""))
    return StageStatus("stage2", True, detail)


def stage2_options(opts: PipelineOptions, layout: PipelineLayout, **own: Any) -> MaskRunOptions:
    """Stage 2's options: its masks_crf/ keep every pixel (``ignore_below`` is the training labels')."""
    return stage_options(MaskRunOptions, opts, out=str(layout.stage2.root), tags=str(layout.stage1.txt),
                         **{"ignore_below": None, **own})


def trains(opts: PipelineOptions) -> bool:
    """Whether this run trains a segmenter (stage 3)."""
    return bool(opts.seg_config) and not opts.skip_train


def training_labels(opts: PipelineOptions, layout: PipelineLayout) -> Path:
    """The folder stage 3 trains on: the confidence-guided CRF labels, or without a threshold
    (or without the CRF, which gives no confidence) the masks as stage 2 wrote them."""
    if opts.crf_masks and opts.ignore_below is not None:
        return layout.stage2.confident_dir(opts.ignore_below)
    return layout.stage2.label_dir(crf=opts.crf_masks)


def _confident_labels(opts: PipelineOptions, layout: PipelineLayout, preset: Preset,
                      resolved: MaskOptions) -> StageStatus:
    """CLIP-ES's confidence-guided training labels, by the CRF again from the stored CAMs (the
    CRF's own settings and backend, with ``ignore_below``: ``resolved``, the pipeline's stage-2
    options), resumable image by image."""
    if not opts.crf_masks or opts.ignore_below is None:
        why = "no CRF: stage 3 trains on masks/" if not opts.crf_masks else "stage 3 trains on every pixel of masks_crf/"
        return StageStatus("labels", False, why)
    folder = layout.stage2
    ids = [e.image_id for e in read_split(layout.stage1.txt, preset.classes) if folder.cam(e.image_id).is_file()]
    jobs = [CRFJob(str(find_image(opts.img_root, i)), str(folder.cam(i)), str(folder.confident(i, opts.ignore_below)),
                   str(folder.root)) for i in ids]
    work = CRFWork(LabelSpace.from_preset(preset), resolved.crf, resolved.max_pixels)
    result = run_crf_batch(jobs, work, opts.crf_workers, opts.overwrite, opts.progress)
    if result.failed:
        raise UserError(f"{len(result.failed)} training labels could not be made (first: "
                        f"{next(iter(result.failed.values()))})")
    return StageStatus("labels", result.written > 0,
                       f"{result.written} written, {result.skipped} already in {folder.confident_dir(opts.ignore_below)}")


def _train(opts: PipelineOptions, layout: PipelineLayout, preset: Preset, resolved: MaskOptions) -> StageStatus:
    if not trains(opts):
        return StageStatus("stage3", False, "--skip-train given" if opts.skip_train else "no --seg-config given")
    last = final_checkpoint(opts.seg_config, opts.cfg_options, layout.stage3)
    if last.is_file() and not opts.overwrite:
        return StageStatus("stage3", False, f"{last} exists")
    from wsss.seg.runner import load_config, train  # mmseg is needed from here on only

    log.info(_confident_labels(opts, layout, preset, resolved).line())

    masks = training_labels(opts, layout)
    resume = (layout.stage3 / "last_checkpoint").is_file() and not opts.overwrite
    cfg = load_config(opts.seg_config, pseudo_masks=str(masks), data_root=opts.data_root,
                      work_dir=str(layout.stage3), cfg_options=opts.cfg_options or None, resume=resume)
    train(cfg)
    return StageStatus("stage3", True, f"trained to {last}" + (" (resumed)" if resume else ""))


def _is_results_file(path: Path) -> bool:
    """Whether ``path`` holds a results record (an older or damaged table is scored again)."""
    try:
        read_results(path)
    except UserError:
        return False
    return True


def _evaluate(opts: PipelineOptions, layout: PipelineLayout, preset: Preset, stale: bool) -> StageStatus:
    if not opts.gt_masks:
        return StageStatus("eval", False, "no --gt-masks given")
    folders = [layout.stage2.label_dir(crf=False)] + ([layout.stage2.label_dir(crf=True)] if opts.crf_masks else [])
    tables = [layout.eval / f"{f.name}.json" for f in folders]
    if not stale and all(_is_results_file(t) for t in tables):
        return StageStatus("eval", False, f"tables in {layout.eval}")
    gt = Path(opts.gt_masks)
    ids = [e.image_id for e in read_split(layout.stage1.txt, preset.classes) if (gt / f"{e.image_id}.png").is_file()]
    if not ids:
        raise UserError(f"{gt}: no ground-truth PNG for any tagged image")
    split = layout.eval / "ids_with_gt.txt"
    write_text_atomic(split, "\n".join(ids) + "\n", layout.root)
    results = []
    for folder, table in zip(folders, tables):
        result = evaluate_dirs(folder, gt, opts.dataset, split, missing_as_wrong=True, workers=opts.crf_workers)
        write_results(result, table, layout.root)
        results.append(f"{folder.name} mIoU {result['mIoU']:.2f}" if result["mIoU"] is not None else folder.name)
    return StageStatus("eval", True, f"{len(ids)} images with ground truth: " + ", ".join(results))


def _report(opts: PipelineOptions, layout: PipelineLayout, preset: Preset) -> Path:
    tables = [("pseudo masks", layout.eval / "masks.json"), ("pseudo masks + CRF", layout.eval / "masks_crf.json"),
              ("segmenter (validation)", layout.stage3 / "results_val.json"),
              ("segmenter (test)", layout.stage3 / "results_test.json")]
    coarse = preset.clip_es.label_space == "coarse27"
    return write_report(layout.root / "report.html", ReportInputs(
        images=opts.img_root, tags=layout.stage1.jsonl, class_names=preset.classes,
        stage2=layout.stage2.root, tables=tables, label_names=coarse27_names(preset) if coarse else None,
        title=f"pipeline report: {preset.name}", max_images=opts.report_images,
        random_weights=random_weights_used(stage_configs(layout.stage1, layout.stage2)),
        settings=[("images", opts.img_root), ("split", opts.split or "all images"),
                  ("CLIP weights", opts.pretrained), ("segmenter config", opts.seg_config or "none")],
        notes=[f"first {opts.report_images} images of the split shown"]), layout.root)


def check_options(opts: PipelineOptions) -> None:
    """Refuse up front what would only fail after hours of stages 1 and 2."""
    if opts.gt_masks:
        if not opts.dataset:
            raise UserError("--gt-masks needs --dataset (its evaluation protocol gives the label names)")
        if not Path(opts.gt_masks).is_dir():
            raise UserError(f"{opts.gt_masks}: ground-truth folder not found")
    if trains(opts):
        if not Path(opts.seg_config).is_file():
            raise UserError(f"{opts.seg_config}: segmenter config not found")
        if opts.data_root and not Path(opts.data_root).is_dir():
            raise UserError(f"{opts.data_root}: data root not found")


def run_pipeline(opts: PipelineOptions, on_stage: Callable[[StageStatus], None] = lambda s: None
                 ) -> list[StageStatus]:
    """Run (or skip) stage 1, stage 2, training and evaluation in order, then write the report.

    ``on_stage`` is called with each stage's status as soon as the stage is over.
    """
    check_options(opts)
    preset = make_preset(opts.dataset, opts.classes, opts.background)
    resolved = MaskChoices.resolve(opts, preset)  # every stage-2 choice checked before stage 1 runs
    layout = PipelineLayout(Path(opts.out))
    statuses: list[StageStatus] = []

    def record(status: StageStatus) -> StageStatus:
        statuses.append(status)
        on_stage(status)
        return status

    record(_stage1(opts, layout, preset))
    masks_ran = record(_stage2(opts, layout, preset)).ran
    record(_evaluate(opts, layout, preset, stale=masks_ran))
    record(_train(opts, layout, preset, resolved))
    if opts.report_images > 0:
        path = _report(opts, layout, preset)
        record(StageStatus("report", True, str(path)))
    return statuses
