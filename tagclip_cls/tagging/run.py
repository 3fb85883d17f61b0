"""Stage 1 end to end: options in, ``tags.jsonl``/``tags.txt``/``metrics.json`` out."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from tagclip_cls.runtime.distributed import device_for_rank, rank_info
from tagclip_cls.core.models import load_clip
from tagclip_cls.runtime.denormals import flush_denormals
from tagclip_cls.runtime.setup import check_device_and_output, check_run_config, share_cpu_threads
from tagclip_cls.core.batches import check_batching
from tagclip_cls.core.presets import make_preset
from tagclip_cls.formats.tags import TagFolder
from tagclip_cls.tagging.api import TagChoices, Tagger
from tagclip_cls.tagging.resumable import collect_entries, tag_images

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TagRunOptions(TagChoices):
    """Everything ``tools/gen_tags.py`` takes: the stage's choices (:class:`TagChoices`, one set of
    defaults with the API) and where its inputs and outputs are."""

    img_root: str
    out: str
    dataset: str | None = None
    classes: str | None = None
    background: str | None = None
    split: str | None = None
    model: str | None = None
    pretrained: str = "openai"
    batch_size: int = 1
    cache_dir: str | None = None
    strict: bool = False
    overwrite: bool = False
    progress: bool = True


def run_stage1(opts: TagRunOptions, verify_only: bool = False) -> dict | None:
    """Tag the images of ``opts``; returns the metrics on rank 0 when the split has labels.
    ``verify_only``: only refuse an output folder made with other settings or weights (the model
    loads for its fingerprint), computing and writing nothing."""
    check_device_and_output(opts.device, opts.out)
    options = opts.resolve()  # bad choices fail before the model loads
    check_batching(opts.batch_size, options.runtime.batching)
    rank = rank_info()
    if rank.world_size > 1 and not opts.device.startswith("cuda"):
        share_cpu_threads()
    preset = make_preset(opts.dataset, opts.classes, opts.background)
    entries = collect_entries(opts.img_root, opts.split, preset.classes)
    settings = {"classes": preset.classes, "background_words": preset.background_words, "method": opts.method,
                "max_side": opts.max_side, "batch_size": opts.batch_size, "batching": options.runtime.batching}
    check_run_config(TagFolder(opts.out).run_config, settings, write=False, overwrite=opts.overwrite,
                     known_before_loading=True)
    device = device_for_rank(opts.device, rank)
    with flush_denormals(device.type == "cpu"):  # see tagclip_cls.runtime.denormals: 1.9x faster on CPU
        clip = load_clip(opts.model, opts.pretrained, device)
        tagger = Tagger(clip, preset, options, cache_dir=opts.cache_dir)
        run_config = {**settings, "model": clip.name, "random_weights": clip.random_weights,
                      "text": clip.text_fingerprint, "weights": clip.weights_fingerprint,
                      "config": asdict(tagger.model.config)}
        if verify_only:
            check_run_config(TagFolder(opts.out).run_config, run_config, write=False)
            return None
        return tag_images(tagger, entries, opts.out, run_config, opts.batch_size, opts.strict, opts.overwrite,
                          rank, options.runtime.loader_threads, opts.progress, options.runtime.batching)
