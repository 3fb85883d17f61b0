"""Numbers, sizes and types read from the user's files are checked, not converted: ASCII digits
only, JSON integers that are integers, sizes bounded before anything is allocated; every
mistake is one line naming the file (and line or entry)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tagclip_cls.formats.annotations import compressed_rle_counts, coco_split_rows
from tagclip_cls.formats.splits import read_split
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.runtime.numbers import parse_float, parse_index, parse_int
from wsss.evaluation.gt_masks import write_coco_masks

ROOT = Path(__file__).resolve().parent.parent
COCO_IDS = list(range(1, 81))


def run_tool(tool: str, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("text", ["٣", "²", "３", "1_0", " 3", "3 ", "+3", "", "0x3", "1" * 5000])
def test_only_ascii_digits_are_indices(text):
    assert parse_index(text) is None
    assert parse_int(text) is None or text == "+3"


@pytest.mark.parametrize("text", ["٣.5", "1e999", "nan", "inf", "-inf", "0.5 ", "½", "1,5"])
def test_only_finite_ascii_floats(text):
    assert parse_float(text) is None


def test_ascii_numbers_still_read():
    assert (parse_index("07"), parse_int("-8"), parse_float("-.5"), parse_float("1e-3")) == (7, -8, -0.5, 0.001)


@pytest.mark.parametrize("label", ["²", "٣", "３", "1" * 5000])
def test_split_labels_are_ascii_indices(tmp_path, label):
    split = tmp_path / "split.txt"
    split.write_text(f"img1 1\nimg2 {label}\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"split.txt:2: unknown class label '{label}'"):
        read_split(split, ["cat", "dog", "cow", "pig"])


def coco(tmp_path, image=None, annotation=None, categories=None) -> Path:
    data = {"categories": categories or [{"id": i, "name": str(i)} for i in COCO_IDS],
            "images": [{"id": 7, "file_name": "7.jpg", "height": 4, "width": 5, **(image or {})}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "iscrowd": 0,
                             "segmentation": [[0.0, 0.0, 3.0, 0.0, 3.0, 3.0]], **(annotation or {})}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("field, value", [
    ({"annotation": {"category_id": "٣"}}, "category_id must be an integer, got '٣'"),
    ({"annotation": {"category_id": "3"}}, "category_id must be an integer, got '3'"),
    ({"annotation": {"category_id": 3.0}}, "category_id must be an integer, got 3.0"),
    ({"annotation": {"image_id": True}}, "image_id must be an integer, got True"),
    ({"image": {"id": "7"}}, "image '7': id must be an integer"),
    ({"categories": [{"id": "٣"}]}, "category .٣.: id must be an integer, got '٣'"),
])
def test_coco_ids_are_json_integers(tmp_path, field, value):
    path = coco(tmp_path, **field)
    with pytest.raises(UserError, match=str(path) + ".*" + value.replace("(", r"\(")):
        coco_split_rows(path, 80)


def test_compressed_rle_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 5), (40, 33)]:
        for density in (0.0, 0.1, 0.9, 1.0):
            mask = np.asfortranarray((rng.random(shape) < density).astype(np.uint8))
            encoded = mask_utils.encode(mask)["counts"].decode()
            flat = mask.flatten(order="F").tolist()
            runs, value, run = [], 0, 0
            for pixel in flat:
                if pixel != value:
                    runs.append(run)
                    value, run = pixel, 0
                run += 1
            assert compressed_rle_counts(encoded) == runs + [run], (shape, density)
    assert compressed_rle_counts("0") is not None and compressed_rle_counts("0h") is None  # "h": more follows
    assert compressed_rle_counts("é") is None


@pytest.mark.parametrize("annotation, message", [
    ({"segmentation": {"size": [8, 5], "counts": [20]}}, "RLE size [8, 5] is not the image's [height, width] [4, 5]"),
    ({"segmentation": {"size": [4, 5], "counts": [3, 2]}}, "RLE counts do not cover the 5 x 4 image exactly once"),
    ({"segmentation": {"size": [4, 5], "counts": [30]}}, "RLE counts do not cover"),
    ({"segmentation": {"size": [4, 5], "counts": [25, -5]}}, "RLE counts do not cover"),
    ({"segmentation": {"size": [4, 5], "counts": "04"}}, "RLE counts do not cover"),
    ({"segmentation": {"size": [4, 5], "counts": [20.0]}}, "RLE counts must be a list of integers"),
    ({"segmentation": {"size": [4, 5]}}, "RLE counts must be a list of integers"),
    ({"segmentation": [[0, 0, 3, 0]]}, "polygon 1 has 4 coordinates"),
    ({"segmentation": [[0, 0, 3, 0, 3, 3, 1]]}, "polygon 1 has 7 coordinates"),
    ({"segmentation": []}, "segmentation lists no polygon"),
    ({"segmentation": [[0, 0, 3, "0", 3, 3]]}, "polygon 1 must be a list of numbers"),
    ({"segmentation": [[0, 0, 1e300, 0, 3, 3]]}, "polygon 1 reaches far outside the 5 x 4 image"),
    ({"segmentation": [[0, 0, 9, 4] * 200]}, "polygons with an outline of 3600 pixels"),
    ({"segmentation": "x"}, "segmentation must be a list of polygons or an RLE object"),
    ({"iscrowd": "1"}, "iscrowd must be 0 or 1, got '1'"),
])
def test_coco_segmentations_are_checked(tmp_path, annotation, message):
    path = coco(tmp_path, annotation=annotation)
    result = run_tool("prepare_data.py", "coco-masks", "--instances", path, "--out", tmp_path / "out", "--no-progress")
    err = one_line_error(result)
    assert f"{path}: annotation 1: {message}" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("image, message", [
    ({"height": 1_000_000, "width": 1_000_000}, "image size 1000000 x 1000000 is over 89,478,485 pixels"),
    ({"height": 0}, "image size 0 x 5: height and width must be at least 1"),
    ({"width": "5"}, "width must be an integer, got '5'"),
])
def test_coco_image_sizes_are_bounded_before_allocating(tmp_path, image, message):
    path = coco(tmp_path, image=image)
    with pytest.raises(UserError) as err:
        write_coco_masks(path, tmp_path / "out", 80, progress=False)
    assert str(err.value).startswith(f"{path}: image 7: {message}")
    assert not (tmp_path / "out").exists()


def test_valid_rle_and_polygon_still_painted(tmp_path):
    mask = np.zeros((4, 5), np.uint8)
    mask[1:3, 2:4] = 1
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    path = coco(tmp_path, annotation={"segmentation": {"size": [4, 5], "counts": counts}})
    assert write_coco_masks(path, tmp_path / "out", 80, progress=False) == (1, 0)
    from tagclip_cls.formats.mask_png import read_label_png
    assert (read_label_png(tmp_path / "out" / "7.png") == mask * 2).all()


GOOD_RECORD = {"id": "img1", "scores": [0.1, 0.9, 0.4], "tags": [1], "tag_names": ["dog"]}


@pytest.mark.parametrize("change, message", [
    ({"scores": ["0.1", "0.9", "0.4"]}, "image 'img1': scores must be a non-empty list of finite numbers"),
    ({"scores": [0.1, True, 0.4]}, "scores must be a non-empty list of finite numbers"),
    ({"scores": [0.1, float("nan"), 0.4]}, "scores must be a non-empty list of finite numbers"),
    ({"scores": [0.1, float("inf"), 0.4]}, "scores must be a non-empty list of finite numbers"),
    ({"scores": []}, "scores must be a non-empty list of finite numbers"),
    ({"scores": "0.1 0.9"}, "scores must be a non-empty list of finite numbers"),
    ({"scores": [0.1, 0.9]}, "image 'img1': 2 scores, expected 3 (one per class)"),
    ({"tags": ["1"]}, "tags must be a list of class indices 0..2"),
    ({"tags": [True]}, "tags must be a list of class indices 0..2"),
    ({"tags": [1.0]}, "tags must be a list of class indices 0..2"),
    ({"tags": [3]}, "tags must be a list of class indices 0..2"),
    ({"tags": [-1]}, "tags must be a list of class indices 0..2"),
    ({"tags": 1}, "tags must be a list of class indices 0..2"),
    ({"tags": [1, 1]}, "a tag is listed twice"),
    ({"id": 7}, "id 7: image ids must be strings"),
    ({"id": "a/b"}, "id 'a/b': image ids are file names without folders"),
    ({"tag_names": [1]}, "tag_names must be a list of strings"),
])
def test_tags_file_fields_are_checked(tmp_path, change, message):
    from tagclip_cls.formats.tags import read_tag_records

    path = tmp_path / "tags.jsonl"
    first = {**GOOD_RECORD, "id": "img0"}
    path.write_text(json.dumps(first) + "\n" + json.dumps({**GOOD_RECORD, **change}) + "\n")
    with pytest.raises(UserError) as err:
        read_tag_records(path)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value), err.value
    path.write_text(json.dumps(first) + "\n" + json.dumps(GOOD_RECORD) + "\n")
    assert [r["id"] for r in read_tag_records(path)] == ["img0", "img1"]


def test_string_scores_in_a_report_are_one_line(tmp_path):
    from conftest import write_image

    tags = tmp_path / "tags"
    tags.mkdir()
    (tags / "tags.jsonl").write_text(json.dumps({**GOOD_RECORD, "scores": ["0.1", "0.9", "0.4"]}) + "\n")
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "img1.jpg", (20, 30))
    classes = tmp_path / "classes.txt"
    classes.write_text("cat\ndog\ncow\n")
    result = run_tool("make_report.py", "--tags", tags, "--img-root", images, "--classes", classes,
                      "--out", tmp_path / "report.html")
    assert "tags.jsonl:1: image 'img1': scores must be" in one_line_error(result)


def test_mask_api_tags_are_not_bools():
    from types import SimpleNamespace

    from tagclip_cls.core.presets import load_preset
    from wsss.masks.api import MaskGenerator

    generator = SimpleNamespace(preset=load_preset("voc2012"))
    assert MaskGenerator.class_indices(generator, [1, np.int64(2), "dog"]) == [1, 2, 11]
    with pytest.raises(UserError, match="unknown class True"):
        MaskGenerator.class_indices(generator, [True])


def grey_jpeg_named_png(path: Path) -> Path:
    """What the issue reported: a greyscale JPEG saved under a .png name (mode L when opened)."""
    from PIL import Image

    Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5) % 3).save(path, format="JPEG")
    return path


@pytest.fixture
def label_folders(tmp_path):
    from tagclip_cls.formats.mask_png import write_label_png

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    labels = np.arange(20, dtype=np.uint8).reshape(4, 5) % 3
    write_label_png(gt / "a.png", labels)
    write_label_png(pred / "a.png", labels)
    return gt, pred


@pytest.mark.parametrize("where", ["pred", "gt"])
def test_eval_masks_refuses_a_renamed_jpeg(label_folders, where):
    gt, pred = label_folders
    assert run_tool("eval_masks.py", "--pred", pred, "--gt", gt, "--dataset", "voc2012").returncode == 0
    bad = grey_jpeg_named_png((pred if where == "pred" else gt) / "a.png")
    err = one_line_error(run_tool("eval_masks.py", "--pred", pred, "--gt", gt, "--dataset", "voc2012"))
    assert f"{bad}: not a PNG file" in err


def test_mask_split_refuses_a_renamed_jpeg(label_folders, tmp_path):
    gt, _ = label_folders
    grey_jpeg_named_png(gt / "b.png")
    result = run_tool("prepare_data.py", "mask-split", "--masks", gt, "--dataset", "voc2012",
                      "--out", tmp_path / "split.txt", "--no-progress")
    assert f"{gt / 'b.png'}: not a PNG file" in one_line_error(result)


@pytest.mark.parametrize("mode, array", [
    ("RGB", np.zeros((4, 5, 3), np.uint8)),
    ("I;16", np.full((4, 5), 257, np.uint16)),
    ("1", np.ones((4, 5), bool)),
    ("LA", np.zeros((4, 5, 2), np.uint8)),
])
def test_label_pngs_are_mode_l_or_p(tmp_path, mode, array):
    from PIL import Image

    from tagclip_cls.formats.mask_png import read_label_png

    path = tmp_path / "m.png"
    Image.fromarray(array).save(path) if mode != "I;16" else Image.fromarray(array, "I;16").save(path)
    with pytest.raises(UserError, match=r"expected a palette \(P\) or 8-bit greyscale \(L\) label PNG, got mode"):
        read_label_png(path)
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(path)
    assert read_label_png(path).tolist() == [[7] * 5] * 4


@pytest.mark.parametrize("kind", ["jpeg", "16-bit"])
def test_stage3_masks_are_label_pngs(tmp_path, kind):
    from PIL import Image

    from wsss.seg.datasets import LoadCheckedAnnotations
    from wsss.seg.errors import SegUserError

    img, seg = tmp_path / "a.jpg", tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(img)
    if kind == "jpeg":
        grey_jpeg_named_png(seg)
    else:
        Image.fromarray(np.full((4, 5), 257, np.uint16), "I;16").save(seg)  # mmseg would cast it to 1
    results = dict(img_path=str(img), seg_map_path=str(seg), reduce_zero_label=False, seg_fields=[], ori_shape=(4, 5))
    with pytest.raises(SegUserError, match="a.png: mask must be a single-channel"):
        LoadCheckedAnnotations()(dict(results))


class Parsed(Exception):
    """Raised once a tool's arguments parsed: nothing after parsing runs in these tests."""


def parse_tool(tool: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Parse ``tools/TOOL``'s arguments in this process; the exit status and stderr of a mistake."""
    import runpy

    from tagclip_cls.cli import ToolParser

    def parse_only(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise Parsed
    original = ToolParser.parse_args
    monkeypatch.setattr(ToolParser, "parse_args", parse_only)
    path = str(ROOT / "tools" / tool)
    monkeypatch.setattr(sys, "argv", [path, *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(path, run_name="__main__")
    return exc.value.code, capsys.readouterr().err


TOOL_ARGS = {
    "gen_tags.py": ["--img-root", ".", "--out", "o", "--dataset", "voc2007"],
    "gen_pseudo_masks.py": ["--img-root", ".", "--tags", "t", "--out", "o", "--dataset", "voc2012"],
    "run_pipeline.py": ["--img-root", ".", "--out", "o", "--dataset", "voc2012"],
    "demo.py": [],
    "eval_masks.py": ["--pred", ".", "--gt", ".", "--dataset", "voc2012"],
    "make_report.py": ["--tags", ".", "--img-root", ".", "--dataset", "voc2012", "--out", "r.html"],
    "make_random_weights.py": ["--out", "w"],
}
AT_LEAST_1 = "expected a whole number of at least 1"
AT_LEAST_0 = "expected a whole number of at least 0"
FROM_0_TO_1 = "expected a number from 0 to 1"
ABOVE_0_TO_1 = "expected a number above 0 to 1"
NUMERIC_FLAGS = [
    ("gen_tags.py", "--max-side", ["0", "-5", "٣", "1.5", "1e3", "9" * 5000], AT_LEAST_1),
    ("gen_tags.py", "--loader-threads", ["-1"], AT_LEAST_0),
    ("gen_tags.py", "--batch-size", ["0", "-2"], AT_LEAST_1),
    ("gen_pseudo_masks.py", "--box-threshold", ["5", "nan", "-1", "inf", "-inf", "1.01", "٠.5", "0,5"], FROM_0_TO_1),
    ("gen_pseudo_masks.py", "--max-side", ["0", "-5"], AT_LEAST_1),
    ("gen_pseudo_masks.py", "--ignore-below", ["0", "1.5", "nan", "-0.5"], ABOVE_0_TO_1),
    ("gen_pseudo_masks.py", "--crf-workers", ["-1"], AT_LEAST_0),
    ("gen_pseudo_masks.py", "--threads", ["0", "-2"], AT_LEAST_1),
    ("gen_pseudo_masks.py", "--loader-threads", ["-1"], AT_LEAST_0),
    ("gen_pseudo_masks.py", "--batch-size", ["0"], AT_LEAST_1),
    ("run_pipeline.py", "--ignore-below", ["inf"], ABOVE_0_TO_1),
    ("run_pipeline.py", "--crf-workers", ["-1"], AT_LEAST_0),
    ("run_pipeline.py", "--report-images", ["-1"], AT_LEAST_0),
    ("run_pipeline.py", "--batch-size", ["0"], AT_LEAST_1),
    ("demo.py", "--train-iters", ["0"], AT_LEAST_1),
    ("demo.py", "--seg-size", ["8", "-64"], "expected a whole number of at least 16"),
    ("eval_masks.py", "--read-workers", ["-1"], AT_LEAST_0),
    ("make_report.py", "--max-images", ["0", "-3"], AT_LEAST_1),
    ("make_random_weights.py", "--vision-layers", ["0"], AT_LEAST_1),
    ("make_random_weights.py", "--patch-size", ["٣"], AT_LEAST_1),
    ("make_random_weights.py", "--seed", ["-1"], AT_LEAST_0),
]


@pytest.mark.parametrize("tool, flag, values, message", NUMERIC_FLAGS, ids=[f"{t}{f}" for t, f, *_ in NUMERIC_FLAGS])
def test_numeric_flags_are_checked_while_parsing(monkeypatch, capsys, tool, flag, values, message):
    for value in values:
        code, err = parse_tool(tool, [*TOOL_ARGS[tool], f"{flag}={value}"], monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: argument {flag}: {value!r}: {message} (see "), err


def test_numeric_types_take_ascii_numbers_in_range():
    from tagclip_cls.cli import CONFIDENCE, COUNT, FRACTION, POSITIVE

    assert (POSITIVE("3"), COUNT("0"), FRACTION("0"), FRACTION("1"), FRACTION(".4"), CONFIDENCE("1e-3")) == \
        (3, 0, 0.0, 1.0, 0.4, 0.001)


def tool_parsers(monkeypatch) -> dict[str, "argparse.ArgumentParser"]:
    """Every tool's parser, caught as the tool starts parsing (prepare_data's sub-parsers included)."""
    import argparse
    import runpy

    from tagclip_cls.cli import ToolParser

    class Caught(Exception):
        pass

    parsers = {}
    for path in sorted((ROOT / "tools").glob("*.py")):
        def catch(self, *args, **kwargs):
            parsers[path.name] = self
            raise Caught
        monkeypatch.setattr(ToolParser, "parse_args", catch)
        monkeypatch.setattr(sys, "argv", [str(path)])
        with pytest.raises(Caught):
            runpy.run_path(str(path), run_name="__main__")
    for name, parser in list(parsers.items()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.update({f"{name} {sub}": p for sub, p in action.choices.items()})
    return parsers


def test_no_tool_reads_a_number_with_int_or_float(monkeypatch):
    parsers = tool_parsers(monkeypatch)
    assert len(parsers) >= 10
    loose = [f"{name} {action.option_strings}" for name, parser in parsers.items() for action in parser._actions
             if action.type in (int, float)]
    assert loose == []


@pytest.mark.parametrize("text", ["-٨:", "-8:-١", "1.5:", "-8", "::", "a:b"])
def test_affinity_layers_are_ascii_integers(text):
    from wsss.masks.api import parse_layer_slice

    with pytest.raises(UserError, match="--affinity-layers .*: expected START:END in ASCII digits"):
        parse_layer_slice(text)
    assert [parse_layer_slice(t) for t in ("-8:-1", "-8:", ":3", " -8 : ")] == [(-8, -1), (-8, None), (None, 3), (-8, None)]


def test_one_line_escapes_line_breaks_and_terminal_controls():
    from tagclip_cls.runtime.errors import one_line

    text = one_line("a\nb\r\x1b[31mc\u2028d\x85e\tf café")
    assert text == "a\\nb\\r\\x1b[31mc\\u2028d\\x85e\\tf café" and len(text.splitlines()) == 1


def test_a_file_name_with_a_newline_stays_one_line(label_folders):
    gt, pred = label_folders
    (gt / "a.png").rename(gt / "x\ny.png")
    err = one_line_error(run_tool("eval_masks.py", "--pred", pred, "--gt", gt, "--dataset", "voc2012"))
    assert f"{gt}/x\\ny.png: image ids may not contain whitespace or control characters" in err


def test_an_argument_with_a_newline_stays_one_line():
    err = one_line_error(run_tool("eval_masks.py", "--pred", ".", "--gt", ".", "--dataset", "voc2012", "--x\ny"))
    assert "unrecognized arguments: --x\\ny" in err


def test_skipped_reasons_stay_one_line(tmp_path):
    from tagclip_cls.formats.tags import TagFolder

    folder = TagFolder(tmp_path)
    folder.write([], ["cat"], {"b": "cannot read\nsecond line", "a": "ok"})
    assert folder.skipped.read_text() == "a\tok\nb\tcannot read\\nsecond line\n"
    assert folder.skipped_ids() == {"a", "b"}


def test_class_names_must_fit_clips_context():
    import open_clip

    from tagclip_cls.core.text import check_prompt_lengths, load_templates

    tokenizer, templates = open_clip.get_tokenizer("ViT-B-16"), load_templates()
    template = max(templates, key=lambda t: len(tokenizer.encode(t.format("cat"))))
    longest = len(tokenizer.encode(template.format("cat"))) + 2  # "cat" is one token
    fits = " ".join(["cat"] * (77 - longest + 1))
    check_prompt_lengths(tokenizer, ["dog", fits], templates)
    too_long = fits + " cat"
    with pytest.raises(UserError, match=rf"class name '{too_long}' is too long for CLIP's text encoder: 78 tokens "
                                        r"in the prompt '.*\{\}.*', at most 77 \(start and end included\)"):
        check_prompt_lengths(tokenizer, ["dog", too_long], templates)
    # the two names CLIP would cut to the same 77 tokens
    assert (tokenizer([template.format(too_long)]) == tokenizer([template.format(too_long + " dog")])).all()


def test_long_class_name_is_refused_before_encoding(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    from conftest import write_image

    import tagclip_cls.core.text as text

    monkeypatch.setattr(text, "encode_prompts", lambda *a: pytest.fail("encoded a name CLIP would cut"))
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.jpg", (20, 30))
    classes = tmp_path / "classes.txt"
    long_name = " ".join(["a"] * 80)
    classes.write_text(f"cat\n{long_name}\n")
    code, err = parse_tool_and_run("gen_tags.py", ["--img-root", str(images), "--classes", str(classes),
                                                   "--pretrained", tiny_checkpoint, "--cache-dir", str(tmp_path / "c"),
                                                   "--out", str(tmp_path / "out"), "--no-progress"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and f"error: class name '{long_name}' is too long" in err, err


def parse_tool_and_run(tool: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run ``tools/TOOL`` in this process to its end; its exit status and stderr."""
    import runpy

    path = str(ROOT / "tools" / tool)
    monkeypatch.setattr(sys, "argv", [path, *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(path, run_name="__main__")
    return exc.value.code, capsys.readouterr().err


def test_hash_inside_a_class_name_is_refused(tmp_path):
    from tagclip_cls.core.presets import make_preset, read_class_file

    classes = tmp_path / "classes.txt"
    classes.write_text("# my classes\ncat\n   # indented comment\n\ndog\n", encoding="utf-8")
    assert read_class_file(classes) == ("cat", "dog")
    classes.write_text("# my classes\ncat\nC# programmer\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{classes}:3: '#' in class name 'C# programmer' \(class files take it as a "
                                        r"comment only at the start of a line\)$"):
        read_class_file(classes)
    classes.write_text("cat  # a pet\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"^{classes}:1: '#' in class name 'cat # a pet'"):
        read_class_file(classes)
    with pytest.raises(UserError, match=r"^classes\[1\]: '#' in class name 'C#'"):
        make_preset(classes=["cat", "C#"])


ASCII_LOCALE = {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}


def test_non_ascii_class_names_under_an_ascii_locale(tmp_path, tiny_checkpoint):
    """Files are UTF-8 whatever the locale; the console escapes what it can't show."""
    import os

    from conftest import write_image

    env = {**os.environ, **ASCII_LOCALE, "PYTHONPATH": str(ROOT)}
    check = subprocess.run([sys.executable, "-c", "import locale, sys; print(locale.getpreferredencoding(), "
                            "sys.stdout.encoding)"], capture_output=True, text=True, env=env)
    assert check.stdout.split() == ["ANSI_X3.4-1968", "ascii"], check.stdout  # the locale really is ASCII
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.jpg", (24, 32))
    classes, split = tmp_path / "classes.txt", tmp_path / "split.txt"
    classes.write_text("café\ndog\n", encoding="utf-8")
    split.write_text("a café\n", encoding="utf-8")
    out = tmp_path / "tags"
    result = run_tool("gen_tags.py", "--img-root", images, "--split", split, "--classes", classes,
                      "--pretrained", tiny_checkpoint, "--cache-dir", tmp_path / "cache", "--out", out,
                      "--no-progress", env=env)
    assert result.returncode == 0, result.stderr
    assert "caf\\xe9" in result.stdout  # the per-class summary, escaped on the ASCII console
    assert (out / "tags.txt").read_text(encoding="utf-8") in ("a café\n", "a dog\n", "a café dog\n")
    assert (out / "metrics.json").is_file()
    report = tmp_path / "report.html"
    result = run_tool("make_report.py", "--tags", out, "--img-root", images, "--classes", classes, "--out", report,
                      env=env)
    assert result.returncode == 0, result.stderr
    assert "café" in report.read_text(encoding="utf-8")


def text_opens_without_encoding(source: str) -> list[int]:
    """Lines of ``source`` that read or write text without naming the encoding: ``read_text``,
    ``write_text``, ``open`` and ``os.fdopen`` in a mode without ``b``."""
    import ast

    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("read_text", "write_text"):
            lines.append(node.lineno)
        elif name == "fdopen" or (name == "open" and isinstance(node.func, ast.Name)):
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if not (isinstance(mode, ast.Constant) and "b" in str(mode.value)):
                lines.append(node.lineno)
    return lines


def test_every_text_file_is_opened_as_utf8():
    assert text_opens_without_encoding("open(p)\nopen(p, 'rb')\nos.fdopen(fd, mode)\np.read_text()\n"
                                       "p.write_text(t, encoding='utf-8')\nImage.open(p)\n") == [1, 3, 4]
    found = {str(path.relative_to(ROOT)): text_opens_without_encoding(path.read_text(encoding="utf-8"))
             for folder in ("tagclip_cls", "wsss", "tools") for path in sorted((ROOT / folder).rglob("*.py"))}
    assert {path: lines for path, lines in found.items() if lines} == {}


@pytest.mark.parametrize("keys", [np.array([1.7, 3.0]), np.array([-1, 2]), np.array([2, 2]), np.array([[1, 2]]),
                                  np.array([True, False])])
def test_cam_keys_are_class_indices(tmp_path, keys):
    from tagclip_cls.formats.mask_folder import read_cam_keys, read_cams

    path = tmp_path / "a.npz"
    np.savez(path, keys=keys, cams=np.zeros((keys.size, 2, 2), np.float16))
    with pytest.raises(UserError, match=r"a.npz: CAM keys must be distinct class indices \(non-negative integers\)"):
        read_cams(path)
    assert read_cam_keys(path) is None  # recomputed on resume
    np.savez(path, keys=np.array([3, 1]), cams=np.zeros((2, 2, 2), np.float16))
    assert read_cams(path)[0] == read_cam_keys(path) == [3, 1]
