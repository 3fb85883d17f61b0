"""Stage 1 end to end: options in, ``tags.jsonl``/``tags.txt``/``metrics.json`` out."""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import torch

from tagclip_cls.runtime.distributed import device_for_rank, rank_info
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.core.models import load_clip
from tagclip_cls.runtime.overlap import read_threads
from tagclip_cls.runtime.precision import warn_if_slow
from tagclip_cls.core.presets import Preset, custom_preset, load_preset
from tagclip_cls.tagging.runner import ImageTagger, collect_entries, tag_images
from tagclip_cls.tagging.tagclip import TagCLIP, TagConfig
from tagclip_cls.core.text import load_templates, text_embeddings

log = logging.getLogger(__name__)

METHODS = ("tagclip", "dmar", "coarse", "global")


@dataclass
class TagRunOptions:
    img_root: str
    out: str
    dataset: str | None = None
    classes: str | None = None
    background: str | None = None
    split: str | None = None
    model: str | None = None
    pretrained: str = "openai"
    device: str = "cpu"
    batch_size: int = 1
    precision: str = "fp32"
    method: str = "tagclip"
    max_side: int | None = 1024
    no_fp16_pos: bool = False
    cache_dir: str | None = None
    loader_threads: int | None = None  # None: 2 on a GPU, 0 on a CPU (see overlap.py)
    strict: bool = False
    overwrite: bool = False
    progress: bool = True


def resolve_preset(dataset: str | None, classes: str | None, background: str | None) -> Preset:
    if dataset:
        if background:
            raise UserError("--background goes with --classes; a --dataset preset has its own words")
        return load_preset(dataset)
    if not classes:
        raise UserError("pass --dataset NAME or --classes FILE")
    return custom_preset(classes, background)


def tag_config(preset: Preset, method: str, precision: str, round_fp16_pos: bool) -> TagConfig:
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return TagConfig(dmar=method in ("tagclip", "dmar"), cwr=method == "tagclip",
                     dmar_layers=preset.dmar_layers, cwr_ratio=preset.cwr_ratio, tag_ratio=preset.tag_ratio,
                     round_fp16_pos=round_fp16_pos, precision=precision)


def run_stage1(opts: TagRunOptions) -> dict | None:
    """Tag the images of ``opts``; returns the metrics on rank 0 when the split has labels."""
    if opts.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    rank = rank_info()
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no GPU here; use --device cpu")
    if rank.world_size > 1 and not opts.device.startswith("cuda"):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))
    preset = resolve_preset(opts.dataset, opts.classes, opts.background)
    entries = collect_entries(opts.img_root, opts.split, preset.classes)
    clip = load_clip(opts.model, opts.pretrained, device_for_rank(opts.device, rank))
    warn_if_slow(opts.precision, clip.device)
    text = text_embeddings(clip, preset.classes + preset.background_words, load_templates(), opts.cache_dir)
    config = tag_config(preset, opts.method, opts.precision, not opts.no_fp16_pos)
    tagger = ImageTagger(TagCLIP(clip, text, preset.num_classes, config), preset.classes, opts.method,
                         opts.max_side)
    run_config = {"model": clip.name, "text": clip.text_fingerprint, "classes": preset.classes,
                  "background_words": preset.background_words, "config": asdict(config),
                  "method": opts.method, "max_side": opts.max_side, "batch_size": opts.batch_size}
    return tag_images(tagger, entries, opts.out, run_config, opts.batch_size, opts.strict, opts.overwrite,
                      rank, read_threads(opts.loader_threads, clip.device.type), opts.progress)
