"""Image-level labels from the official annotations (VOC XML, COCO instances JSON).

Output rows are ``(image_id, class indices)`` for ``splits.write_split``.

* VOC: every ``<object>``'s ``<name>`` counts, difficult objects included by default (the
  published VOC2007 test label file lists them; they are real objects of that class).
* COCO: category ids sorted ascending map to class indices 0..79, the preset's class order
  (its names are VOC-like, e.g. 'motorbike' for COCO's 'motorcycle', so names are not matched).
  Crowd annotations count as labels. Image ids are the file-name stems
  (``COCO_val2014_000000000042``, ``000000000139``), which is how the images are found on disk.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

from tagclip_cls.formats.splits import read_lines
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.ids import check_image_id


def read_image_set(path: str | os.PathLike) -> list[str]:
    """Image ids of a VOC ``ImageSets/*/*.txt`` file (first token of each non-blank line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image set file not found")
    ids = [check_image_id(line.split()[0], f"{path}:{lineno}")
           for lineno, line in enumerate(read_lines(path), 1) if line.strip()]
    if not ids:
        raise UserError(f"{path}: image set lists no images")
    return ids


def voc_xml_labels(path: str | os.PathLike, class_names: Sequence[str],
                   include_difficult: bool = True) -> list[int]:
    """Sorted class indices of the objects in one VOC annotation XML."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path}: malformed XML ({exc})") from None
    index = {name: i for i, name in enumerate(class_names)}
    labels: set[int] = set()
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise UserError(f"{path}: unknown object class {name!r}")
        if include_difficult or (obj.findtext("difficult") or "0").strip() != "1":
            labels.add(index[name])
    return sorted(labels)


def voc_split_rows(voc_root: str | os.PathLike, image_set: str, class_names: Sequence[str],
                   include_difficult: bool = True) -> list[tuple[str, list[int]]]:
    """Rows for every image of ``VOCroot/ImageSets/Main/<image_set>.txt`` from ``Annotations/*.xml``."""
    root = Path(voc_root)
    ids = read_image_set(root / "ImageSets" / "Main" / f"{image_set}.txt")
    return [(i, voc_xml_labels(root / "Annotations" / f"{i}.xml", class_names, include_difficult))
            for i in ids]


def load_coco_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a COCO instances JSON and check its top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise UserError(f"{path}: not a COCO instances file (needs images, annotations, categories)")
    return data


def coco_category_index(data: dict[str, Any], num_classes: int, path: str | os.PathLike) -> dict[int, int]:
    """COCO category id -> class index, by ascending category id."""
    ids = sorted(int(c["id"]) for c in data["categories"])
    if len(ids) != num_classes:
        raise UserError(f"{path}: {len(ids)} categories, the preset has {num_classes} classes")
    return {cat: i for i, cat in enumerate(ids)}


def coco_image_id(file_name: str, source: str | os.PathLike) -> str:
    """The id written to split files: the image file name without folder and extension
    (checked, naming ``source`` when it can't be an id)."""
    return check_image_id(Path(str(file_name).replace("\\", "/")).stem, f"{source}: file_name {file_name!r}")


def coco_split_rows(path: str | os.PathLike, num_classes: int,
                    keep_empty: bool = False) -> list[tuple[str, list[int]]]:
    """Rows for the images of a COCO instances JSON, in ascending image id order.

    Images without any annotation are left out unless ``keep_empty`` (then written with no labels).
    """
    data = load_coco_json(path)
    category = coco_category_index(data, num_classes, path)
    labels: dict[int, set[int]] = {}
    for ann in data["annotations"]:
        cat = int(ann["category_id"])
        if cat not in category:
            raise UserError(f"{path}: annotation {ann.get('id')} has unknown category id {cat}")
        labels.setdefault(int(ann["image_id"]), set()).add(category[cat])
    rows = []
    for image in sorted(data["images"], key=lambda im: int(im["id"])):
        found = labels.get(int(image["id"]), set())
        if found or keep_empty:
            rows.append((coco_image_id(image["file_name"], path), sorted(found)))
    return rows
