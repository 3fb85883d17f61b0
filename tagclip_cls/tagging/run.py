"""Stage 1 end to end: options in, ``tags.jsonl``/``tags.txt``/``metrics.json`` out."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass


from tagclip_cls.runtime.distributed import device_for_rank, rank_info
from tagclip_cls.core.models import load_clip
from tagclip_cls.runtime.denormals import flush_denormals
from tagclip_cls.runtime.overlap import read_threads
from tagclip_cls.runtime.precision import resolve_attention
from tagclip_cls.runtime.setup import check_device_and_output, check_run_config, share_cpu_threads
from tagclip_cls.core.batches import check_batching, default_batching
from tagclip_cls.core.presets import make_preset
from tagclip_cls.core.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from tagclip_cls.formats.tags import TagFolder
from tagclip_cls.tagging.api import Tagger, tag_config
from tagclip_cls.tagging.resumable import collect_entries, tag_images

log = logging.getLogger(__name__)

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
    batching: str | None = None  # None: see default_batching
    precision: str = "fp32"
    attention: str | None = None  # None: see runtime.precision.resolve_attention
    method: str = "tagclip"
    max_side: int | None = DEFAULT_MAX_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    no_fp16_pos: bool = False
    cache_dir: str | None = None
    loader_threads: int | None = None  # None: see overlap.read_threads (0 on a CPU)
    strict: bool = False
    overwrite: bool = False
    progress: bool = True


def run_stage1(opts: TagRunOptions, verify_only: bool = False) -> dict | None:
    """Tag the images of ``opts``; returns the metrics on rank 0 when the split has labels.
    ``verify_only``: only refuse an output folder made with other settings or weights (the model
    loads for its fingerprint), computing and writing nothing."""
    batching = opts.batching or default_batching(opts.device)
    check_batching(opts.batch_size, batching)
    rank = rank_info()
    check_device_and_output(opts.device, opts.precision, opts.out)
    if rank.world_size > 1 and not opts.device.startswith("cuda"):
        share_cpu_threads()
    preset = make_preset(opts.dataset, opts.classes, opts.background)
    entries = collect_entries(opts.img_root, opts.split, preset.classes)
    attention = resolve_attention(opts.attention, opts.device)
    tag_config(preset, opts.method, opts.precision, attention=attention)  # bad choices fail before the model loads
    settings = {"classes": preset.classes, "background_words": preset.background_words, "method": opts.method,
                "max_side": opts.max_side, "batch_size": opts.batch_size, "batching": batching}
    check_run_config(TagFolder(opts.out).run_config, settings, write=False, overwrite=opts.overwrite,
                     known_before_loading=True)
    device = device_for_rank(opts.device, rank)
    with flush_denormals(device.type == "cpu"):  # see tagclip_cls.runtime.denormals: 1.9x faster on CPU
        clip = load_clip(opts.model, opts.pretrained, device)
        tagger = Tagger(clip, preset, method=opts.method, precision=opts.precision, max_side=opts.max_side,
                        round_fp16_pos=not opts.no_fp16_pos, cache_dir=opts.cache_dir, attention=attention,
                        max_pixels=opts.max_pixels)
        run_config = {**settings, "model": clip.name, "random_weights": clip.random_weights,
                      "text": clip.text_fingerprint, "weights": clip.weights_fingerprint,
                      "config": asdict(tagger.model.config)}
        if verify_only:
            check_run_config(TagFolder(opts.out).run_config, run_config, write=False)
            return None
        return tag_images(tagger, entries, opts.out, run_config, opts.batch_size, opts.strict, opts.overwrite,
                          rank, read_threads(opts.loader_threads, clip.device.type), opts.progress, batching)
