#!/usr/bin/env python
"""Stage 2 speed: CAM generation (fp32 and bf16 by default, any precision) and the dense CRF per worker count.

ViT-B/16 shapes with random weights (or --pretrained PATH), 8 synthetic images of 230-640 px with
1-3 VOC tags each; times the CAM call on prepared tensors (decoding excluded), best of --repeats.
Also reports how often each other precision's label maps equal fp32 ones. Not a test.

    python benchmarks/bench_masks.py [--device cpu|cuda] [--threads N] [--workers 1 2] [--batch N] [--profile ROWS]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image, ImageDraw
from open_clip.model import build_model_from_openai_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from profiling import profile_phases  # noqa: E402
from tagclip_cls.runtime.cpu_memory import retain_freed_memory  # noqa: E402
from tagclip_cls.runtime.precision import PRECISIONS  # noqa: E402
from tagclip_cls.core.models import LoadedClip, load_clip  # noqa: E402
from tagclip_cls.core.images import prepare_image  # noqa: E402
from tagclip_cls.core.presets import load_preset  # noqa: E402
from tagclip_cls.core.random_weights import random_openai_state_dict  # noqa: E402
from tagclip_cls.core.text import encode_prompts  # noqa: E402
from wsss.masks.cams import CAM_TEMPLATE, CamConfig, ClipES  # noqa: E402
from wsss.masks.crf import CRFJob, CRFWork, run_crf_batch  # noqa: E402
from wsss.masks.label_maps import LabelSpace, label_map  # noqa: E402
from tagclip_cls.formats.mask_folder import write_cams  # noqa: E402

SIZES = [(231, 301), (333, 500), (480, 640), (375, 257), (640, 427), (245, 613), (500, 375), (389, 389)]


def synthetic_images(folder: Path, seed: int = 0) -> list[tuple[Path, list[int]]]:
    """8 noisy images with a few shapes, and 1-3 random VOC tags each."""
    rng = np.random.default_rng(seed)
    items = []
    for i, (h, w) in enumerate(SIZES):
        arr = (rng.random((1, 1, 3)) * 255 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.integers(2, 6)):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            box = [x0, y0, x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))]
            draw.rectangle(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        path = folder / f"img{i:02d}.jpg"
        img.save(path, quality=92)
        items.append((path, sorted(rng.choice(20, int(rng.integers(1, 4)), replace=False).tolist())))
    return items


# ClipES's methods that profiles and operation counts report as phases
PHASES = ("trunk", "grad_cams", "_tag_gradients")


def random_vitb16(device: str) -> LoadedClip:
    model = build_model_from_openai_state_dict(random_openai_state_dict(), cast_dtype=torch.float32)
    model = model.float().eval().requires_grad_(False).to(device)
    return LoadedClip(model=model, tokenizer=open_clip.get_tokenizer("ViT-B-16"), name="random ViT-B/16")


def time_cams(generator: ClipES, prepared, repeats: int, batch: int = 1) -> tuple[float, list[np.ndarray]]:
    """Best-of-``repeats`` seconds per image over the set, and the last run's CAMs (of each
    image's first copy). Each image runs as ``batch`` copies of itself in one :meth:`ClipES.batch`
    call: 1 is one image per call, as the tool runs; more is images of one size, as a GPU would
    group them."""
    calls = [(image.tensor[None].expand(batch, -1, -1, -1), [tags] * batch, [image.orig_size] * batch)
             for image, tags in prepared]
    generator.batch(*calls[0])  # warm-up
    best, outputs = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = [generator.batch(*call)[0] for call in calls]
        if generator.clip.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / (len(calls) * batch))
    return best, outputs


def bench_cams(clip: LoadedClip, text: torch.Tensor, num_classes: int, prepared, space: LabelSpace,
               repeats: int, precisions: list[str], grad_modes: list[str], profile_rows: int = 0,
               batch: int = 0) -> list[np.ndarray]:
    """Print the speed of each precision and gradient mode, and the bf16/fp32 label-map agreement
    (and, with ``profile_rows``, a profile of one image's CAMs); return the CAMs of the first
    combination."""
    maps, cams_first = {}, []
    for precision in precisions:
        for grad_mode in grad_modes:
            generator = ClipES(clip, text[:num_classes], text[num_classes:],
                               CamConfig(precision=precision, grad_mode=grad_mode))
            seconds, outputs = time_cams(generator, prepared, repeats)
            maps[precision] = [label_map(o.astype(np.float16).astype(np.float32), tags, space)
                               for o, (_, tags) in zip(outputs, prepared)]
            print(f"CAMs {precision} {grad_mode:7s}: {seconds:.3f} s/img  {1 / seconds:.2f} img/s")
            if batch:
                seconds, _ = time_cams(generator, prepared, repeats, batch)
                print(f"CAMs {precision} {grad_mode:7s}, batches of {batch}: {seconds:.3f} s/img  {1 / seconds:.2f} img/s")
            if profile_rows:
                image, tags = prepared[0]
                profile_phases(lambda: generator(image.tensor, tags, image.orig_size), generator, PHASES, profile_rows,
                               f"{precision} {grad_mode}, {len(tags)} tags", clip.device.type == "cuda")
            cams_first = cams_first or outputs
    for precision in [p for p in maps if p != "fp32" and "fp32" in maps]:
        same = sum((a == b).sum() for a, b in zip(maps["fp32"], maps[precision]))
        total = sum(a.size for a in maps["fp32"])
        print(f"{precision} label maps equal to fp32: {100 * same / total:.2f}% of pixels")
    return cams_first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--pretrained", help="an OpenAI-layout checkpoint instead of fresh random ViT-B/16 weights")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=PRECISIONS)
    p.add_argument("--grad-modes", nargs="+", default=["loop", "batched"], choices=["loop", "batched"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--skip-crf", action="store_true")
    p.add_argument("--crf-copies", type=int, default=2, help="CRF jobs = 8 images x this")
    p.add_argument("--skip-cams", action="store_true", help="CRF only (CAMs of the fp32 loop mode are still computed once)")
    p.add_argument("--batch", type=int, default=0, metavar="N",
                   help="also time CAMs in batches of N images of one size (N copies of each image)")
    p.add_argument("--profile", type=int, default=0, metavar="ROWS",
                   help="after each timing, profile one image: time per phase, host-device round trips and "
                        "the ROWS costliest operations")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as the tools do
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}  "
          f"torch {torch.__version__}  threads {args.threads}  device {args.device}")

    clip = load_clip(None, args.pretrained, args.device) if args.pretrained else random_vitb16(args.device)
    preset = load_preset("voc2012")
    space = LabelSpace.from_preset(preset)
    names, background = preset.clip_es.cam_names, preset.clip_es.background_words
    text = encode_prompts(clip, names + background, [CAM_TEMPLATE])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = synthetic_images(tmp)
        prepared = [(prepare_image(path, clip.patch_size), tags) for path, tags in items]
        print(f"{len(items)} images, {sum(len(t) for _, t in items)} tags")
        if args.skip_cams:
            generator = ClipES(clip, text[:len(names)], text[len(names):])
            crf_cams = [generator(image.tensor, tags, image.orig_size) for image, tags in prepared]
        else:
            crf_cams = bench_cams(clip, text, len(names), prepared, space, args.repeats, args.precisions,
                                  args.grad_modes, args.profile, args.batch)

        if args.skip_crf:
            return
        jobs = []
        for (path, tags), cams in zip(items, crf_cams):
            write_cams(tmp / "cams" / f"{path.stem}.npz", tags, cams.astype(np.float16))
        for copy in range(args.crf_copies):
            jobs += [CRFJob(str(path), str(tmp / "cams" / f"{path.stem}.npz"), str(tmp / f"crf{copy}" / f"{path.stem}.png"))
                     for path, _ in items]
        for workers in args.workers:
            start = time.perf_counter()
            run_crf_batch(jobs, CRFWork(space), workers=workers, overwrite=True, progress=False)
            seconds = time.perf_counter() - start
            print(f"CRF workers={workers}: {len(jobs) / seconds:.2f} img/s ({len(jobs)} images, pool start-up included)")


if __name__ == "__main__":
    main()
