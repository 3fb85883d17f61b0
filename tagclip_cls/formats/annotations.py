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
from tagclip_cls.runtime.numbers import is_json_int, is_json_number

COCO_LISTS = ("images", "annotations", "categories")
#: the largest image a COCO mask is painted for: PIL's own limit for opening an image
#: (``Image.MAX_IMAGE_PIXELS``, 89.5 megapixels; COCO's images have at most 0.4)
MAX_MASK_PIXELS = 89_478_485
#: the longest outline of an annotation's polygons, in multiples of the image's own: pycocotools
#: allocates about 40 bytes per pixel of outline (COCO's run to a few times the image's)
MAX_OUTLINE_RATIO = 100


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
    """Read a COCO instances JSON and check its top-level keys: lists of objects."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(k in data for k in COCO_LISTS):
        raise UserError(f"{path}: not a COCO instances file (needs images, annotations, categories)")
    for key in COCO_LISTS:
        if not isinstance(data[key], list) or not all(isinstance(entry, dict) for entry in data[key]):
            raise UserError(f"{path}: {key} must be a list of objects")
    return data


def coco_entry(path: str | os.PathLike, kind: str, entry: dict[str, Any]) -> str:
    """How errors name one entry of a COCO JSON: ``FILE: annotation 12``."""
    return f"{path}: {kind} {entry.get('id')!r}"


def coco_int(entry: dict[str, Any], key: str, where: str) -> int:
    """``entry[key]``, which must be a JSON integer (a string, a float or ``true`` is refused
    rather than converted); ``where`` names the entry in the error (:func:`coco_entry`)."""
    value = entry.get(key)
    if not is_json_int(value):
        raise UserError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def coco_category_index(data: dict[str, Any], num_classes: int, path: str | os.PathLike) -> dict[int, int]:
    """COCO category id -> class index, by ascending category id."""
    ids = sorted(coco_int(c, "id", coco_entry(path, "category", c)) for c in data["categories"])
    if len(ids) != num_classes:
        raise UserError(f"{path}: {len(ids)} categories, the preset has {num_classes} classes")
    return {cat: i for i, cat in enumerate(ids)}


def coco_annotation_category(ann: dict[str, Any], category: dict[int, int], path: str | os.PathLike) -> int:
    """The class index of one annotation (its ``category_id`` checked against the categories)."""
    where = coco_entry(path, "annotation", ann)
    cat = coco_int(ann, "category_id", where)
    if cat not in category:
        raise UserError(f"{where}: unknown category id {cat}")
    return category[cat]


def coco_image_id(file_name: str, source: str | os.PathLike) -> str:
    """The id written to split files: the image file name without folder and extension
    (checked, naming ``source`` when it can't be an id)."""
    if not isinstance(file_name, str):
        raise UserError(f"{source}: file_name must be a string, got {file_name!r}")
    return check_image_id(Path(file_name.replace("\\", "/")).stem, f"{source}: file_name {file_name!r}")


def coco_images_by_id(data: dict[str, Any], path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """``(id, image)`` for every image, in ascending id order."""
    images = [(coco_int(image, "id", coco_entry(path, "image", image)), image) for image in data["images"]]
    return sorted(images, key=lambda item: item[0])


def coco_split_rows(path: str | os.PathLike, num_classes: int,
                    keep_empty: bool = False) -> list[tuple[str, list[int]]]:
    """Rows for the images of a COCO instances JSON, in ascending image id order.

    Images without any annotation are left out unless ``keep_empty`` (then written with no labels).
    """
    data = load_coco_json(path)
    category = coco_category_index(data, num_classes, path)
    labels: dict[int, set[int]] = {}
    for ann in data["annotations"]:
        index = coco_annotation_category(ann, category, path)
        labels.setdefault(coco_int(ann, "image_id", coco_entry(path, "annotation", ann)), set()).add(index)
    rows = []
    for image_id, image in coco_images_by_id(data, path):
        found = labels.get(image_id, set())
        if found or keep_empty:
            rows.append((coco_image_id(image.get("file_name"), coco_entry(path, "image", image)), sorted(found)))
    return rows


def coco_image_size(image: dict[str, Any], where: str) -> tuple[int, int]:
    """``(height, width)`` of an image entry: positive integers of at most :data:`MAX_MASK_PIXELS`
    pixels in all, checked before a mask of that size is allocated."""
    height, width = coco_int(image, "height", where), coco_int(image, "width", where)
    if height < 1 or width < 1:
        raise UserError(f"{where}: image size {height} x {width}: height and width must be at least 1")
    if height * width > MAX_MASK_PIXELS:
        raise UserError(f"{where}: image size {height} x {width} is over {MAX_MASK_PIXELS:,} pixels, "
                        f"the most a mask is painted for")
    return height, width


def check_coco_segmentation(segmentation: Any, height: int, width: int, where: str) -> None:
    """Refuse a ``segmentation`` that pycocotools would misread for a ``height x width`` image
    (an ``IndexError`` on a size that disagrees, uninitialised pixels from short run lengths, a
    huge allocation for a far-away polygon point): polygons of at least 3 points lying within
    one image size of the image, or an RLE of the image's size whose runs cover it exactly."""
    if isinstance(segmentation, list):
        _check_polygons(segmentation, height, width, where)
    elif isinstance(segmentation, dict):
        _check_rle(segmentation, height, width, where)
    else:
        raise UserError(f"{where}: segmentation must be a list of polygons or an RLE object")


def _check_polygons(polygons: list, height: int, width: int, where: str) -> None:
    if not polygons:
        raise UserError(f"{where}: segmentation lists no polygon")
    outline = 0.0
    for number, polygon in enumerate(polygons, 1):
        if not (isinstance(polygon, list) and all(is_json_number(v) for v in polygon)):
            raise UserError(f"{where}: polygon {number} must be a list of numbers")
        if len(polygon) < 6 or len(polygon) % 2:
            raise UserError(f"{where}: polygon {number} has {len(polygon)} coordinates; "
                            f"expected x, y pairs of at least 3 points")
        xs, ys = polygon[0::2], polygon[1::2]
        if min(xs) < -width or max(xs) > 2 * width or min(ys) < -height or max(ys) > 2 * height:
            raise UserError(f"{where}: polygon {number} reaches far outside the {width} x {height} image")
        outline += sum(max(abs(x - xs[i - 1]), abs(y - ys[i - 1])) for i, (x, y) in enumerate(zip(xs, ys)))
    if outline > MAX_OUTLINE_RATIO * 2 * (height + width):
        raise UserError(f"{where}: polygons with an outline of {outline:.0f} pixels, over {MAX_OUTLINE_RATIO} "
                        f"times the {width} x {height} image's")


def _check_rle(rle: dict, height: int, width: int, where: str) -> None:
    size, counts = rle.get("size"), rle.get("counts")
    if size != [height, width] or not all(is_json_int(v) for v in size):
        raise UserError(f"{where}: RLE size {size!r} is not the image's [height, width] [{height}, {width}]")
    if isinstance(counts, str):
        runs = compressed_rle_counts(counts)
    elif isinstance(counts, list) and all(is_json_int(v) for v in counts):
        runs = counts
    else:
        raise UserError(f"{where}: RLE counts must be a list of integers or a compressed string")
    if runs is None or any(run < 0 for run in runs) or sum(runs) != height * width:
        raise UserError(f"{where}: RLE counts do not cover the {width} x {height} image exactly once")


def compressed_rle_counts(text: str) -> list[int] | None:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``), or
    ``None`` when it is not one (not ASCII, cut short, a run over 60 bits)."""
    if not text.isascii():
        return None
    counts: list[int] = []
    codes = [ord(ch) - 48 for ch in text]
    pos = 0
    while pos < len(codes):
        value = shift = 0
        more = True
        while more:
            if pos == len(codes) or shift > 55:
                return None
            code = codes[pos]
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and code & 0x10:
                value |= -1 << shift
        counts.append(value + (counts[-2] if len(counts) > 2 else 0))
    return counts
