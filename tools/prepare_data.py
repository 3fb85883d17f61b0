#!/usr/bin/env python
"""Prepare split files (``ID label label ...``) and ground-truth masks from official annotations.

The *-split commands write one split FILE (--out FILE); the *-masks commands fill a folder
(--out DIR). Existing outputs are kept unless --overwrite.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tagclip_cls.core.presets import available_presets, load_preset  # noqa: E402
from tagclip_cls.formats.annotations import coco_split_rows, read_image_set, voc_split_rows  # noqa: E402
from tagclip_cls.formats.splits import write_split  # noqa: E402
from tagclip_cls.runtime.arguments import check_arguments  # noqa: E402
from tagclip_cls.cli import ToolParser, run_cli  # noqa: E402
from wsss.evaluation.gt_masks import CROWD_MODES, mask_split_rows, write_coco_masks, write_stuff_masks  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ToolParser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ToolParser)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--out", required=True,
                       help="output split FILE" if name.endswith("-split") else "output mask folder")
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        return p

    p = command("voc-split", "split file from VOC Annotations/*.xml and ImageSets/Main/<set>.txt")
    p.add_argument("--voc-root", required=True, help="e.g. VOCdevkit/VOC2007")
    p.add_argument("--image-set", default="test", help="ImageSets/Main/<name>.txt (default: test)")
    p.add_argument("--dataset", default="voc2007", choices=available_presets(),
                   help="preset giving the class order (default: voc2007)")
    p.add_argument("--skip-difficult", action="store_true", help="ignore objects marked difficult")

    p = command("coco-split", "split file from a COCO instances JSON (images with annotations)")
    p.add_argument("--instances", required=True, help="e.g. annotations/instances_val2014.json")
    p.add_argument("--dataset", default="coco2014", choices=available_presets(),
                   help="preset giving the class order (default: coco2014)")
    p.add_argument("--keep-empty", action="store_true", help="also list images without annotations")

    p = command("mask-split", "split file from label PNGs (VOC SegmentationClass[Aug], COCO-Stuff maps)")
    p.add_argument("--masks", required=True, help="folder of ID.png masks")
    p.add_argument("--dataset", required=True, choices=available_presets(),
                   help="voc2012 (value = class + 1) or cocostuff (PNG values)")
    p.add_argument("--ids", help="file whose first column lists the images (default: every PNG)")

    p = command("coco-masks", "COCO-Object ground-truth PNGs (0 background, class + 1) from instances JSON")
    p.add_argument("--instances", required=True, help="e.g. annotations/instances_val2017.json")
    p.add_argument("--dataset", default="coco2017", choices=available_presets(),
                   help="preset giving the class order (default: coco2017)")
    p.add_argument("--crowd", choices=CROWD_MODES, default="ignore",
                   help="crowd regions: 255 (ignore, default) or their class")
    p.add_argument("--keep-empty", action="store_true", help="also write all-background masks")

    p = command("stuff-masks", "COCO-Stuff-27 ground-truth PNGs (coarse 0..26, 255) from stuffthingmaps")
    p.add_argument("--masks", required=True, help="folder of COCO-Stuff-164k ID.png maps")
    p.add_argument("--ids", help="file whose first column lists the images (default: every PNG)")
    args = parser.parse_args(argv)
    return check_arguments(args, out_is_folder=args.command.endswith("-masks"))


def _write_split_file(args: argparse.Namespace, rows: list[tuple[str, list[int]]], classes: tuple[str, ...]) -> None:
    write_split(args.out, rows, classes)
    print(f"wrote {args.out}: {len(rows)} images")


def run(args: argparse.Namespace) -> None:
    progress = not args.no_progress
    if args.command.endswith("-split") and Path(args.out).exists() and not args.overwrite:
        print(f"{args.out} exists, kept (use --overwrite to replace)")
        return
    if args.command == "voc-split":
        classes = load_preset(args.dataset).classes
        _write_split_file(args, voc_split_rows(args.voc_root, args.image_set, classes,
                                               include_difficult=not args.skip_difficult), classes)
    elif args.command == "coco-split":
        classes = load_preset(args.dataset).classes
        _write_split_file(args, coco_split_rows(args.instances, len(classes), args.keep_empty), classes)
    elif args.command == "mask-split":
        preset = load_preset(args.dataset)
        ids = read_image_set(args.ids) if args.ids else None
        _write_split_file(args, mask_split_rows(args.masks, preset, ids, progress), preset.classes)
    elif args.command == "coco-masks":
        written, skipped = write_coco_masks(args.instances, args.out, load_preset(args.dataset).num_classes,
                                            args.crowd, args.keep_empty, args.overwrite, progress)
        print(f"{args.out}: {written} masks written, {skipped} existing kept")
    elif args.command == "stuff-masks":
        ids = read_image_set(args.ids) if args.ids else None
        written, skipped = write_stuff_masks(args.masks, args.out, load_preset("cocostuff"), ids,
                                             args.overwrite, progress)
        print(f"{args.out}: {written} masks written, {skipped} existing kept")


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
