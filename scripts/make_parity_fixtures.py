#!/usr/bin/env python
"""Regenerate ``tests/fixtures/parity/`` by running the PUBLISHED TagCLIP and CLIP-ES code.

    git clone https://github.com/linyq2117/TagCLIP /path/TagCLIP     # contains CLIP-ES/
    .venv/bin/pip install lxml ttach                                   # the published code's own needs
    .venv/bin/python scripts/make_parity_fixtures.py /path/TagCLIP [--out tests/fixtures/parity]

Inputs are rebuilt from seeds (``tests/parity_inputs.py``): tiny 12-layer CLIPs with float32
and fp16-valued weights, and five odd-sized images. The published code runs unmodified on the
CPU, each run in a subprocess of its own (both repositories have modules called ``clip`` and
``utils``), as its own ``__main__``:

* stage 1: ``classify.py --dataset D --img_root ... --split_file ... --model_path W --save_file``;
  the final scores are its ``pred_label_id`` list, read when ``classify()`` returns (a profile
  hook; nothing of its code is changed), the tags its ``output/D_val_tagclip.txt``;
* stage 2: ``CLIP-ES/generate_cams_{voc,coco,cocostuff}.py`` with one textual change, the
  device (``"cuda:{}".format(process_id % n_gpus)`` becomes ``"cpu"``); the float32 refined CAMs
  are the values ``scale_cam_image`` returns to ``perform()`` (its saved ``.npy`` holds them in
  float16), the label maps those ``eval_cam.py`` / ``eval_cam_cocostuff.py`` build from the
  ``.npy`` files (its ``preds``, read when ``run_eval_cam()`` returns).

Outputs: ``stage1_WEIGHTS_PRESET.npz`` (``ids``, ``scores`` I x K float32, ``tags`` as a 0/1
I x K matrix) and ``stage2_WEIGHTS_PRESET.npz`` (per image ``cams_ID`` K x H x W float32,
``labels_ID`` H x W uint8, and ``keys_ID``). Nothing of the published code is copied here.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import parity_inputs as inputs  # noqa: E402
from tagclip_cls.core.presets import load_preset  # noqa: E402

STAGE2_SCRIPTS = {"voc2012": ("generate_cams_voc.py", "eval_cam.py", "voc"),
                  "coco2014": ("generate_cams_coco.py", "eval_cam.py", "coco"),
                  "cocostuff": ("generate_cams_cocostuff.py", "eval_cam_cocostuff.py", "cocostuff")}
DEVICE_LINE = 'device_id = "cuda:{}".format(process_id % n_gpus)'


def locals_at_return(function: str, names: tuple[str, ...]) -> dict:
    """Install a profile hook that keeps ``names`` from the locals of ``function`` when it returns."""
    kept: dict = {}

    def hook(frame, event, arg):
        if event == "return" and frame.f_code.co_name == function:
            kept.update({n: frame.f_locals[n] for n in names if n in frame.f_locals})
    sys.setprofile(hook)
    return kept


def seekable_torch_load() -> None:
    """``clip.load`` tries ``torch.jit.load`` on the open file first; on torch >= 2 that leaves the
    file at its end, so the state-dict ``torch.load`` that follows is made to start from 0."""
    import torch

    original = torch.load

    def load(f, *args, **kwargs):
        if hasattr(f, "seek"):
            f.seek(0)
        return original(f, *args, **kwargs)
    torch.load = load


def run_main(path: Path, argv: list[str], replace: tuple[str, str] | None = None) -> None:
    """Run a published script as ``__main__`` with ``argv`` (optionally one textual replacement)."""
    sys.argv = [str(path), *argv]
    if replace is None:
        runpy.run_path(str(path), run_name="__main__")
        return
    source = path.read_text()
    if source.count(replace[0]) != 1:
        raise SystemExit(f"{path}: expected the line {replace[0]!r} once")
    code = compile(source.replace(*replace), str(path), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(path)})


def child_stage1(published: Path, weights: Path, preset: str, images: Path, work: Path, out: Path) -> None:
    os.chdir(work)
    sys.path[:0] = [str(published)]
    (work / "output").mkdir(exist_ok=True)
    split = work / "split.txt"
    split.write_text("".join(f"{i} 0\n" for i in inputs.IMAGES))  # a label is needed by its metrics
    seekable_torch_load()
    kept = locals_at_return("classify", ("pred_label_id",))
    run_main(published / "classify.py", ["--dataset", preset, "--img_root", str(images), "--split_file", str(split),
                                         "--model_path", str(weights), "--save_file"])
    sys.setprofile(None)
    ids = list(inputs.IMAGES)
    scores = np.stack([np.asarray(s, dtype=np.float32) for s in kept["pred_label_id"]])
    tags = np.zeros(scores.shape, dtype=np.uint8)
    for line in (work / "output" / f"{preset}_val_tagclip.txt").read_text().splitlines():
        image_id, *labels = line.split()
        tags[ids.index(image_id), [int(v) for v in labels]] = 1
    np.savez_compressed(out, ids=np.array(ids), scores=scores, tags=tags)


def child_stage2(published: Path, weights: Path, preset: str, images: Path, work: Path, out: Path) -> None:
    clip_es = published / "CLIP-ES"
    os.chdir(work)
    sys.path[:0] = [str(clip_es)]
    generate, evaluate, kind = STAGE2_SCRIPTS[preset]
    root = work / "JPEGImages"  # the VOC script finds Annotations/ID.xml beside it
    root.symlink_to(images, target_is_directory=True)
    (work / "Annotations").mkdir()
    gt = work / "gt"
    gt.mkdir()
    from PIL import Image
    tags = inputs.STAGE2_TAGS[preset]
    for image_id, (height, width, _) in inputs.IMAGES.items():
        (work / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size></annotation>")
        Image.fromarray(np.zeros((height, width), np.uint8)).save(gt / f"{image_id}.png")
    split = work / "split.txt"
    split.write_text("".join(f"{i} {' '.join(map(str, tags[i]))}\n" for i in inputs.IMAGES))
    cams_dir = work / f"cams_{kind}"
    seekable_torch_load()

    import pytorch_grad_cam.utils.image as grad_cam_image
    original_scale = grad_cam_image.scale_cam_image
    refined: dict[str, list[np.ndarray]] = {}

    def scale_cam_image(*args, **kwargs):  # records what perform() gets back, returns it unchanged
        result = original_scale(*args, **kwargs)
        caller = sys._getframe(1)
        if caller.f_code.co_name == "perform":
            refined.setdefault(caller.f_locals["im"][:-len(".jpg")], []).append(np.array(result[0], np.float32))
        return result
    grad_cam_image.scale_cam_image = scale_cam_image
    run_main(clip_es / generate, ["--img_root", str(root), "--split_file", str(split), "--cam_out_dir", str(cams_dir),
                                  "--model", str(weights), "--num_workers", "1"], (DEVICE_LINE, 'device_id = "cpu"'))
    kept = locals_at_return("run_eval_cam", ("preds",))
    run_main(clip_es / evaluate, ["--cam_out_dir", str(cams_dir), "--split_file", str(split), "--gt_root", str(gt),
                                  "--cam_type", "attn_highres", "--cam_eval_thres", "1"])
    sys.setprofile(None)
    arrays = {}
    for index, image_id in enumerate(inputs.IMAGES):
        saved = np.load(cams_dir / f"{image_id}.npy", allow_pickle=True).item()
        arrays[f"keys_{image_id}"] = np.asarray(saved["keys"], np.int64)
        arrays[f"cams_{image_id}"] = np.stack(refined[image_id])
        if not np.array_equal(arrays[f"cams_{image_id}"].astype(np.float16), saved["attn_highres"]):
            raise SystemExit(f"{image_id}: recorded CAMs differ from the saved ones")
        arrays[f"labels_{image_id}"] = np.asarray(kept["preds"][index], np.uint8)
    np.savez_compressed(out, **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("published", type=Path, help="checkout of github.com/linyq2117/TagCLIP")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "parity")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the published runs")
    parser.add_argument("--overwrite", action="store_true", help="remake fixtures that exist (default: resume)")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, weights, preset, images, work, out = args.child
        import torch
        torch.set_num_threads(args.threads)
        child = child_stage1 if stage == "1" else child_stage2
        child(args.published.resolve(), Path(weights), preset, Path(images), Path(work), Path(out))
        return
    if not (args.published / "classify.py").is_file() or not (args.published / "CLIP-ES").is_dir():
        sys.exit(f"error: {args.published}: not a checkout of linyq2117/TagCLIP (classify.py, CLIP-ES/)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = inputs.write_images(tmp / "images")
        jobs = [("1", name, preset) for name in inputs.WEIGHTS for preset in inputs.STAGE1_PRESETS
                if (name, preset) not in inputs.STAGE1_SKIPPED]
        jobs += [("2", name, preset) for name in inputs.WEIGHTS for preset in inputs.STAGE2_TAGS]
        for stage, name, preset in jobs:
            weights = inputs.write_weights(name, tmp) if not (tmp / f"{name}.pt").exists() else tmp / f"{name}.pt"
            work = Path(tempfile.mkdtemp(dir=tmp))
            out = args.out / f"stage{stage}_{name}_{preset}.npz"
            if out.is_file() and not args.overwrite:
                print(f"stage {stage}, {name}, {preset}: {out} exists, kept", flush=True)
                continue
            print(f"stage {stage}, {name}, {preset} -> {out}", flush=True)
            subprocess.run([sys.executable, __file__, str(args.published), "--threads", str(args.threads),
                            "--child", stage, str(weights), preset, str(images), str(work), str(out)],
                           check=True, stdout=subprocess.DEVNULL)
    (args.out / "README.md").write_text(
        "Made by `scripts/make_parity_fixtures.py` from the published TagCLIP/CLIP-ES code "
        f"(see that script); inputs from `tests/parity_inputs.py`.\n\n```\n{json.dumps(manifest(), indent=1)}\n```\n")


def manifest() -> dict:
    import torch
    return {"torch": torch.__version__, "numpy": np.__version__, "weights": list(inputs.WEIGHTS),
            "stage1_presets": list(inputs.STAGE1_PRESETS), "stage1_skipped": sorted(inputs.STAGE1_SKIPPED),
            "stage2_presets": list(inputs.STAGE2_TAGS),
            "class_counts": {p: load_preset(p).num_classes for p in (*inputs.STAGE1_PRESETS, *inputs.STAGE2_TAGS)}}


if __name__ == "__main__":
    main()
