"""Print how far this machine's stage-1 and stage-2 results lie from the parity fixtures.

Run it under each kernel setting, for example::

    ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 python benchmarks/parity_spread.py

For every weights x preset case of ``tests/test_parity.py`` it prints: the largest stage-1 score
difference; per stage-2 image the largest refined-CAM difference, that difference in float32 ulps of
the CAM's largest value before its final min-max scaling and as a fraction of its tolerance
(``tests/parity_tolerance.py``), and the label-map pixels that differ (and how many of them are
not near ties of the fixture). These
figures set the tolerances in ``tests/parity_tolerance.py`` (docs/verification.md).

The fixtures hold no CAMs before refinement, so those are compared between settings instead:
``--save RUN.npz`` keeps this run's Grad-CAMs, and ``--compare A.npz B.npz ...`` prints how far
each later run's lie from the first's.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import parity_inputs as inputs  # noqa: E402
import wsss.masks.cams as cams_module  # noqa: E402
from parity_tolerance import EPS32, RefinedRanges, cam_tolerance, changed_label_pixels  # noqa: E402
from tagclip_cls import Tagger  # noqa: E402
from wsss import MaskGenerator  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "parity"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def compare(paths: list[str]) -> None:
    """Largest Grad-CAM difference of each saved run from the first one's."""
    first = np.load(paths[0])
    for path in paths[1:]:
        other = np.load(path)
        worst = max(float(np.abs(first[k] - other[k]).max()) for k in first.files)
        print(f"{path}: Grad-CAMs before refinement differ from {paths[0]} by at most {worst:.2e}")


def main(save: str | None) -> None:
    grad_cams: dict[str, np.ndarray] = {}
    print(f"# {cpu_name()}; torch {torch.__version__}; ATEN_CPU_CAPABILITY="
          f"{os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')}; capability used "
          f"{torch.backends.cpu.get_cpu_capability()}; threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = inputs.write_images(tmp / "images")
        weights = {name: inputs.write_weights(name, tmp) for name in inputs.WEIGHTS}
        worst_score = 0.0
        for name in inputs.WEIGHTS:
            for preset in inputs.STAGE1_PRESETS:
                if (name, preset) in inputs.STAGE1_SKIPPED:
                    continue
                fixture = np.load(FIXTURES / f"stage1_{name}_{preset}.npz")
                tagger = Tagger.from_pretrained(str(weights[name]), preset=preset, cache_dir=tmp / "text")
                diffs, tags_equal = [], 0
                for index, image_id in enumerate(fixture["ids"]):
                    result = tagger(images / f"{image_id}.jpg")
                    diffs.append(float(np.abs(result.scores - fixture["scores"][index]).max()))
                    tags_equal += list(result.tags) == np.flatnonzero(fixture["tags"][index]).tolist()
                worst_score = max(worst_score, max(diffs))
                print(f"stage1 {name} {preset}: max |d score| {max(diffs):.2e}, tags equal {tags_equal}/"
                      f"{len(diffs)}")
        worst_cam, worst_ulps, worst_ratio, worst_fraction, outside = 0.0, 0.0, 0.0, 0.0, 0
        for name in inputs.WEIGHTS:
            for preset, image_tags in inputs.STAGE2_TAGS.items():
                fixture = np.load(FIXTURES / f"stage2_{name}_{preset}.npz")
                generator = MaskGenerator.from_pretrained(str(weights[name]), preset=preset, cache_dir=tmp / "text")
                parts = []
                for image_id, tags in image_tags.items():
                    original = cams_module.grad_cam
                    cams_module.grad_cam = lambda *a, key=f"{name}/{preset}/{image_id}": grad_cams.setdefault(
                        key, original(*a))
                    try:
                        with RefinedRanges() as ranges:
                            result = generator(images / f"{image_id}.jpg", tags=tags)
                    finally:
                        cams_module.grad_cam = original
                    expected = fixture[f"cams_{image_id}"]
                    per_cam = np.abs(result.cams - expected).reshape(len(tags), -1).max(axis=1)
                    tolerance = cam_tolerance(ranges.relative)
                    ulps = float((per_cam * np.asarray(ranges.relative) / EPS32).max())
                    ratio = float((per_cam / tolerance).max())
                    changed, far = changed_label_pixels(result.label_map, fixture[f"labels_{image_id}"], expected,
                                                        generator.space, float(tolerance.max()))
                    worst_cam, worst_ulps = max(worst_cam, float(per_cam.max())), max(worst_ulps, ulps)
                    worst_ratio, outside = max(worst_ratio, ratio), outside + far
                    worst_fraction = max(worst_fraction, changed / result.label_map.size)
                    parts.append(f"{image_id} {per_cam.max():.1e} ({ulps:.1f} ulp, {ratio:.2f} tol, "
                                 f"{changed} px{f', {far} not near ties' if far else ''})")
                print(f"stage2 {name} {preset}: " + "; ".join(parts))
        print(f"# worst: score {worst_score:.2e}; CAM {worst_cam:.2e}, {worst_ulps:.2f} ulps of max |r| "
              f"= {worst_ratio:.2f} of its tolerance; changed label pixels {100 * worst_fraction:.2f}% of an "
              f"image, {outside} of them not near ties")
    if save:
        np.savez(save, **grad_cams)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", help="keep this run's Grad-CAMs (before refinement) in this .npz")
    parser.add_argument("--compare", nargs="+", help="compare saved runs instead of running")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
    else:
        main(args.save)
