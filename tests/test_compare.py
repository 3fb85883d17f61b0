"""tools/compare_results.py on metrics files the tools wrote on seeded data: hand-computed deltas,
the paper's figures with their labels, highlighting, one-line refusals, the page in a browser."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from browser import computed, open_page
from conftest import write_image
from tagclip_cls.formats.mask_png import write_label_png
from wsss.apps.compare import compare_runs
from wsss.evaluation.published import published_figures
from wsss.seg.synthetic import write_synthetic_voc

ROOT = Path(__file__).resolve().parent.parent
TINY_SEG = ROOT / "configs" / "tiny" / "deeplabv2_r18-tiny_voc-64x64.py"
VOC_SPLIT = "im0 cat\nim1 dog person\nim2 cat dog\nim3 bird\n"


def run_tool(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "tools" / f"{name}.py"), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _rows_from(pred_rows: int) -> np.ndarray:
    """A 10 x 10 label map: rows above ``pred_rows`` aeroplane (1), the rest background."""
    labels = np.zeros((10, 10), np.uint8)
    labels[:pred_rows] = 1
    return labels


@pytest.fixture(scope="module")
def masks(tmp_path_factory):
    """eval_masks.py runs on one 10 x 10 image whose top 5 rows are aeroplane: R1 predicts 6
    rows (aeroplane IoU 50/60, background 40/50), R2 predicts 4 (40/50 and 50/60); a
    COCO-Stuff run scores another class table."""
    root = tmp_path_factory.mktemp("masks")
    write_label_png(root / "gt" / "im.png", _rows_from(5))
    write_label_png(root / "pred_a" / "im.png", _rows_from(6))
    write_label_png(root / "pred_b" / "im.png", _rows_from(4))
    write_label_png(root / "stuff_gt" / "im.png", np.zeros((10, 10), np.uint8))
    for pred, gt, out, dataset in (("pred_a", "gt", "a", "voc2012"), ("pred_b", "gt", "b", "voc2012"),
                                   ("stuff_gt", "stuff_gt", "stuff", "cocostuff")):
        run_tool("eval_masks", "--pred", root / pred, "--gt", root / gt, "--dataset", dataset, "--out", root / out)
    return root


@pytest.fixture(scope="module")
def tags(tmp_path_factory, tiny_checkpoint):
    """Two gen_tags.py runs (tagclip and the coarse ablation) on four VOC-labelled images."""
    root = tmp_path_factory.mktemp("tags")
    (root / "images").mkdir()
    for seed in range(4):
        write_image(root / "images" / f"im{seed}.png", (48, 64), seed=seed)
    (root / "split.txt").write_text(VOC_SPLIT)
    for name, method in (("full", "tagclip"), ("coarse", "coarse")):
        run_tool("gen_tags", "--img-root", root / "images", "--split", root / "split.txt", "--dataset", "voc2007",
                 "--pretrained", tiny_checkpoint, "--cache-dir", root / "cache", "--out", root / name,
                 "--method", method, "--no-progress", "--log-level", "WARNING")
    return root


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """A folder holding results_test.json (test_seg.py) and, copied beside it, results_val.json
    (train_seg.py, one iteration, whose checkpoint test_seg.py scored)."""
    root = tmp_path_factory.mktemp("seg")
    data = write_synthetic_voc(root / "data", num_train=4, num_val=4, seed=3)
    work = root / "work"
    run_tool("train_seg", TINY_SEG, "--pseudo-masks", data / "pseudo_masks", "--data-root", data, "--work-dir", work,
             "--cfg-options", "train_cfg.max_iters=1", "train_cfg.val_interval=1",
             "default_hooks.checkpoint.interval=1")
    results = root / "results"
    run_tool("test_seg", TINY_SEG, work / "iter_1.pth", "--data-root", data, "--work-dir", results)
    shutil.copy(work / "results_val.json", results)
    return results


def _md_row(text: str, first_cell: str) -> list[str]:
    """The cells of the markdown row starting with ``first_cell``."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _tables(text: str) -> list[str]:
    return re.split(r"^## ", text, flags=re.M)[1:]


def test_mask_deltas_match_a_hand_computation(masks, tmp_path):
    done = run_tool("compare_results", masks / "a", masks / "b", "--out", tmp_path / "cmp")
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert done.stdout.startswith(text)  # the terminal shows the same tables
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["compare.html", "compare.md"]
    [table] = _tables(text)
    assert table.startswith("pseudo masks (eval_masks.py): mIoU, classes of voc2007 / voc2012 (21)")
    # per class: aeroplane 50/60 -> 40/50, background 40/50 -> 50/60; both beyond 1 point
    assert _md_row(table, "aeroplane") == ["aeroplane", "83.33", "80.00", "**-3.33**"]
    assert _md_row(table, "background") == ["background", "80.00", "83.33", "**+3.33**"]
    assert _md_row(table, "cat") == ["cat", "-", "-", "-"]  # no ground truth
    # overall: both 81.67 (mean of 250/3 and 80), so a zero delta, not highlighted
    r1, r2 = _md_row(table, "R1"), _md_row(table, "R2")
    assert r1[1] == str(masks / "a" / "results") and r1[4] == "81.67" and r1[-1] == ""
    assert r2[1] == str(masks / "b" / "results") and r2[4] == "81.67" and r2[-1] == "+0.00"
    # the paper's CLS-SEG figures, labelled as pseudo masks, with their delta to R1 (81.667)
    papers = [line for line in table.splitlines() if line.startswith("| paper |")]
    assert len(papers) == 2
    for line, value, delta in zip(papers, ("64.80", "68.70"), ("**-16.87**", "**-12.97**")):
        cells = _md_row(line, "paper")
        assert cells[4] == value and cells[-1] == delta
        assert "pseudo masks, not a trained network" in cells[2] and cells[3].startswith("TagCLIP:")
    assert "without CRF" in papers[0] and "with CRF" in papers[1]
    comparison = compare_runs([masks / "a", masks / "b"])[0]
    deltas = comparison.class_deltas(comparison.runs[1])
    assert deltas["aeroplane"] == pytest.approx(80 - 250 / 3) and deltas["background"] == pytest.approx(250 / 3 - 80)


def test_highlight_threshold_is_an_option(masks):
    text = run_tool("compare_results", masks / "a", masks / "b", "--highlight", "5").stdout
    assert _md_row(text, "aeroplane")[-1] == "-3.33"  # below 5 points: plain
    assert "**-16.87**" in text  # the paper's figure is still 16.87 points away


def test_tags_and_segmenter_tables(tags, segmenter, masks):
    text = run_tool("compare_results", tags / "full", tags / "coarse", segmenter, masks / "a").stdout
    tag_table, seg_table, mask_table = _tables(text)
    assert tag_table.startswith("image tags (gen_tags.py): mAP, classes of voc2007 / voc2012 (20)")
    first, second = (json.loads((tags / name / "metrics.json").read_text()) for name in ("full", "coarse"))
    delta = second["mAP"] - first["mAP"]
    r2 = _md_row(tag_table, "R2")
    assert r2[4:9] == [f"{second[k]:.2f}" for k in ("mAP", "F1", "precision", "recall")] + ["4"]
    assert r2[-1] == (f"**{delta:+.2f}**" if abs(delta) >= 1 else f"{delta:+.2f}")
    for name in ("cat", "dog", "person", "bird"):
        d = second["per_class_AP"][name] - first["per_class_AP"][name]
        assert _md_row(tag_table, name)[3].strip("*") == f"{d:+.2f}"
    assert _md_row(tag_table, "cow")[1:] == ["-", "-", "-"]  # no positive image
    [paper] = [line for line in tag_table.splitlines() if line.startswith("| paper |")]
    assert "| TagCLIP, VOC2007 test |" in paper and "| 92.80 |" in paper
    [coco] = [line for line in tag_table.splitlines() if line.startswith("| reference |")]  # COCO's 68.8: no delta
    assert _md_row(coco, "reference")[4] == "68.80" and coco.endswith("| other classes (coco2014, 80): no delta |")
    # the segmenter: one row per results file, the CLIP-ES figures labelled as another experiment
    names = [_md_row(seg_table, f"R{i}")[1] for i in (1, 2)]
    assert names == [str(segmenter / "results_test"), str(segmenter / "results_val")]
    val = json.loads((segmenter / "results_val.json").read_text())
    assert _md_row(seg_table, "R2")[4] == f"{val['mIoU']:.2f}"
    papers = [line for line in seg_table.splitlines() if line.startswith("| paper |")]
    assert [_md_row(p, "paper")[4] for p in papers] == ["71.10", "71.40", "73.80", "73.90"]
    assert all("GROUND-TRUTH image labels" in p and "no published trained-network figure" in p for p in papers)
    assert mask_table.startswith("pseudo masks")


def test_published_figures_are_the_papers():
    figures = {(f.benchmark, f.split, f.variant): f.value for f in published_figures()}
    assert figures == {
        ("tags", "VOC2007 test", ""): 92.8, ("tags", "COCO2014 val", ""): 68.8,
        ("masks", "VOC2012 val", "without CRF"): 64.8, ("masks", "VOC2012 val", "with CRF"): 68.7,
        ("masks", "COCO-Object (COCO2017 val, 81 classes)", "without CRF"): 34.0,
        ("masks", "COCO-Object (COCO2017 val, 81 classes)", "with CRF"): 35.3,
        ("masks", "COCO-Stuff-27 val", "without CRF"): 30.1, ("masks", "COCO-Stuff-27 val", "with CRF"): 31.0,
        ("segmenter", "VOC2012 val", "ImageNet init"): 71.1, ("segmenter", "VOC2012 test", "ImageNet init"): 71.4,
        ("segmenter", "VOC2012 val", "COCO-pretrained init"): 73.8,
        ("segmenter", "VOC2012 test", "COCO-pretrained init"): 73.9}
    for figure in published_figures():
        assert figure.citation and figure.table and figure.experiment
        assert ("GROUND-TRUTH" in figure.experiment) == (figure.benchmark == "segmenter")


@pytest.mark.parametrize("mistake", ["missing", "empty", "not_json", "metrics_keys", "wrong_keys", "classes", "twice",
                                     "out_is_run"])
def test_mistakes_are_one_line_errors_and_write_nothing(masks, tmp_path, mistake):
    out = tmp_path / "cmp"
    runs, expected = [masks / "a"], ""
    if mistake == "missing":
        runs, expected = [masks / "a", tmp_path / "nope"], f"{tmp_path / 'nope'}: run folder not found"
    elif mistake == "empty":
        (tmp_path / "empty").mkdir()
        runs, expected = [tmp_path / "empty"], f"{tmp_path / 'empty'}: no metrics.json or results*.json here"
    elif mistake == "not_json":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "metrics.json").write_text("{ cut short")
        runs, expected = [tmp_path / "run"], f"{tmp_path / 'run' / 'metrics.json'}: not a metrics file (invalid JSON"
    elif mistake == "metrics_keys":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "metrics.json").write_text(json.dumps({"mAP": 50.0}))
        runs = [tmp_path / "run"]
        expected = f"{tmp_path / 'run' / 'metrics.json'}: not a metrics file (expected exactly"
    elif mistake == "wrong_keys":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "results_test.json").write_text(json.dumps({"mIoU": 50.0}))
        runs = [tmp_path / "run"]
        expected = f"{tmp_path / 'run' / 'results_test.json'}: not a results file (missing keys"
    elif mistake == "classes":
        runs = [masks / "a", masks / "stuff"]
        expected = f"{masks / 'a' / 'results.json'} and {masks / 'stuff' / 'results.json'}: different class tables"
    elif mistake == "twice":
        runs, expected = [masks / "a", masks / "a" / "results.json"], f"{masks / 'a' / 'results.json'}: given twice"
    elif mistake == "out_is_run":
        out, expected = masks / "a", f"{masks / 'a'}: --out is the runs input"
    before = sorted(p.name for p in (masks / "a").iterdir())
    done = run_tool("compare_results", *runs, "--out", out, check=False)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: {expected}"), line
    assert not (tmp_path / "cmp").exists() and sorted(p.name for p in (masks / "a").iterdir()) == before


def test_a_link_planted_in_the_output_folder_is_not_followed(masks, tmp_path):
    out, outside = tmp_path / "cmp", tmp_path / "outside.html"
    out.mkdir()
    (out / "compare.html").symlink_to(outside)
    done = run_tool("compare_results", masks / "a", "--out", out, check=False)
    assert done.returncode == 2 and "would be written outside" in done.stderr
    assert not outside.exists() and not (out / "compare.md").exists()  # both checked before either is written


def test_page_in_a_browser(masks, tmp_path):
    run_tool("compare_results", masks / "a", masks / "b", "--out", tmp_path)
    with open_page(tmp_path / "compare.html") as (page, errors):
        rows = page.eval_on_selector_all("table.classes tr", "rows => rows.map(r => r.innerText.split('\\t'))")
        assert rows[0] == ["class", "R1 IoU", "R2 IoU", "Δ R2−R1"]
        assert ["aeroplane", "83.33", "80.00", "-3.33"] in rows and ["background", "80.00", "83.33", "+3.33"] in rows
        summary = page.eval_on_selector_all("table.summary tr.paper td.experiment", "tds => tds.map(t => t.innerText)")
        assert len(summary) == 2 and all("not a trained network" in s for s in summary)
        # highlighted deltas: red when down, green when up, bold; the plain +0.00 keeps no colour
        assert computed(page, "table.classes td.delta.beyond.down", "backgroundColor") == ["rgb(255, 205, 210)"]
        assert computed(page, "table.classes td.delta.beyond.up", "backgroundColor") == ["rgb(200, 230, 201)"]
        assert computed(page, "table.classes td.delta.beyond", "fontWeight") == ["700", "700"]
        plain = page.locator("table.summary tr.run td.delta", has_text="+0.00")
        assert plain.evaluate("e => getComputedStyle(e).backgroundColor") == "rgba(0, 0, 0, 0)"
        assert errors == []


def test_names_are_escaped(tmp_path):
    """Class names and folders holding markdown or HTML syntax stay text in both outputs."""
    for folder, ap in (("a|b", 40.0), ("<i>c", 50.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.json").write_text(json.dumps(
            {"mAP": ap, "per_class_AP": {"<b>dog</b>": ap, "x|y": None}, "precision": 1.0, "recall": 2.0,
             "F1": 1.5, "num_images": 2}))
    run_tool("compare_results", tmp_path / "a|b", tmp_path / "<i>c", "--out", tmp_path / "cmp")
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert _md_row(text, "<b>dog</b>") == ["<b>dog</b>", "40.00", "50.00", "**+10.00**"]
    assert "| x\\|y | - | - | - |" in text and f"| R1 | {tmp_path}/a\\|b/metrics |" in text
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<b>dog" not in page and "&lt;b&gt;dog&lt;/b&gt;" in page and "<i>c" not in page


def test_classes_named_like_row_kinds_are_not_styled_as_the_papers_rows(tmp_path):
    """Only summary rows carry the paper/reference styling: a class called 'paper' or
    'reference' is a plain row of the class table."""
    for folder, ap in (("r1", 40.0), ("r2", 50.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "metrics.json").write_text(json.dumps(
            {"mAP": ap, "per_class_AP": {"paper": ap, "reference": ap}, "precision": 1.0, "recall": 2.0,
             "F1": 1.5, "num_images": 2}))
    run_tool("compare_results", tmp_path / "r1", tmp_path / "r2", "--out", tmp_path / "cmp")
    page = (tmp_path / "cmp" / "compare.html").read_text()
    classes = page[page.index('<table class="classes">'):]
    assert '<tr class="paper">' not in classes and '<tr class="reference">' not in classes
    assert ">paper</td>" in classes and ">reference</td>" in classes
