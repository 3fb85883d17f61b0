"""Stage 1 end to end: outputs, resume, sharding, bad inputs."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import tagclip_cls.tagging.resumable as resumable
from tagclip_cls.runtime.distributed import RankInfo
from tagclip_cls.runtime.errors import UserError
from tagclip_cls.tagging.run import TagRunOptions, run_stage1
from tagclip_cls.tagging.resumable import PartFile

import parity_inputs
from conftest import write_image


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("text_cache"))


@pytest.fixture()
def classes_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("cat\nperson\nrocket\ncoffee cup\nhorse\n")
    bg = tmp_path / "bg.txt"
    bg.write_text("sky\ngrass\n")
    return path, bg


def options(image_folder, classes_file, out, checkpoint, cache_dir, **kw):
    return TagRunOptions(img_root=str(image_folder), out=str(out), classes=str(classes_file[0]),
                         background=str(classes_file[1]), pretrained=checkpoint, cache_dir=cache_dir,
                         **{"loader_threads": 0, **kw})


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_outputs_with_labels(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir):
    split = tmp_path / "split.txt"
    split.write_text("d_same horse\nb_rgba cat coffee_cup\na_grey\n")
    metrics = run_stage1(options(image_folder, classes_file, tmp_path / "out", tiny_checkpoint, cache_dir,
                                 split=str(split)))
    records = read_jsonl(tmp_path / "out" / "tags.jsonl")
    assert [r["id"] for r in records] == ["d_same", "b_rgba", "a_grey"]  # input order
    for r in records:
        assert len(r["scores"]) == 5 and r["tags"] == sorted(r["tags"]) and r["tags"]
        assert r["tag_names"] == [["cat", "person", "rocket", "coffee cup", "horse"][t] for t in r["tags"]]
    lines = (tmp_path / "out" / "tags.txt").read_text().splitlines()
    assert lines[0].split()[0] == "d_same"
    assert lines[1].split()[1:] == [["cat", "person", "rocket", "coffee_cup", "horse"][t] for t in records[1]["tags"]]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(saved["per_class_AP"]) == {"cat", "person", "rocket", "coffee cup", "horse"}
    assert saved["per_class_AP"]["person"] is None and saved["num_images"] == 3
    # end to end against a hand computation from the written scores and the split's labels
    truth = {"d_same": {4}, "b_rgba": {0, 3}, "a_grey": set()}
    aps = {}
    for k, name in enumerate(["cat", "person", "rocket", "coffee cup", "horse"]):
        ranked = sorted(range(3), key=lambda i: (-records[i]["scores"][k], i))
        hits, precisions = 0, []
        for rank, i in enumerate(ranked, 1):
            if k in truth[records[i]["id"]]:
                hits += 1
                precisions.append(hits / rank)
        aps[name] = 100 * sum(precisions) / len(precisions) if precisions else None
    assert saved["per_class_AP"] == pytest.approx(aps)
    assert saved["mAP"] == pytest.approx((aps["cat"] + aps["coffee cup"] + aps["horse"]) / 3)  # rocket: no positive
    predicted = sum(len(r["tags"]) for r in records)
    correct = sum(len(set(r["tags"]) & truth[r["id"]]) for r in records)
    precision, recall = 100 * correct / predicted, 100 * correct / 3
    assert (saved["precision"], saved["recall"]) == pytest.approx((precision, recall))
    assert saved["F1"] == pytest.approx(2 * precision * recall / (precision + recall) if correct else 0.0)
    assert metrics == saved  # what the call returns is what it wrote


def test_second_run_does_no_work(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir, monkeypatch):
    opts = options(image_folder, classes_file, tmp_path / "out", tiny_checkpoint, cache_dir)
    run_stage1(opts)
    first = (tmp_path / "out" / "tags.jsonl").read_bytes()

    def no_work(*args, **kwargs):
        raise AssertionError("recomputed")
    monkeypatch.setattr(resumable, "tag_records", no_work)
    monkeypatch.setattr("tagclip_cls.core.text.encode_prompts", no_work)
    run_stage1(opts)
    assert (tmp_path / "out" / "tags.jsonl").read_bytes() == first


def test_killed_run_resumes_to_the_same_result(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir):
    opts = options(image_folder, classes_file, tmp_path / "out", tiny_checkpoint, cache_dir)
    run_stage1(opts)
    out = tmp_path / "out"
    final = (out / "tags.jsonl").read_bytes()
    part = out / "parts" / "rank-0-of-1.jsonl"
    lines = part.read_text().splitlines(keepends=True)
    part.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing batch 2
    (out / "tags.jsonl").unlink()
    run_stage1(opts)
    assert (out / "tags.jsonl").read_bytes() == final
    assert len(part.read_text().splitlines()) == len(lines) + 1  # the torn line stays, sealed


def test_batches_and_shards_give_identical_files(tmp_path, image_folder, classes_file, tiny_checkpoint,
                                                cache_dir, monkeypatch):
    single = options(image_folder, classes_file, tmp_path / "one", tiny_checkpoint, cache_dir, batch_size=2)
    run_stage1(single)
    monkeypatch.setattr(resumable, "wait_for_all", lambda rank: None)
    for r in (1, 0):  # rank 0 merges, so it goes last
        monkeypatch.setattr("tagclip_cls.tagging.run.rank_info", lambda r=r: RankInfo(r, 2, r))
        run_stage1(options(image_folder, classes_file, tmp_path / "two", tiny_checkpoint, cache_dir, batch_size=2))
    for name in ("tags.jsonl", "tags.txt"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "two" / "parts").glob("rank-*")) == ["rank-0-of-2.jsonl",
                                                                                 "rank-1-of-2.jsonl"]
    # batch of two same-size images equals one by one
    monkeypatch.undo()
    run_stage1(options(image_folder, classes_file, tmp_path / "b1", tiny_checkpoint, cache_dir, batch_size=1))
    for a, b in zip(read_jsonl(tmp_path / "one" / "tags.jsonl"), read_jsonl(tmp_path / "b1" / "tags.jsonl")):
        assert a["tags"] == b["tags"] and max(abs(x - y) for x, y in zip(a["scores"], b["scores"])) < 1e-6


def test_fused_attention_only_in_the_crops_and_recorded(tmp_path, tiny_checkpoint, cache_dir, monkeypatch):
    """attention="fused": the CWR crops go through scaled_dot_product_attention (the dense
    forward's weights are all read by DMAR), the run config says so, tags equal the exact run."""
    import torch.nn.functional as F
    images = parity_inputs.write_images(tmp_path / "images")  # COCO classes: these make CWR crops

    def run(name, **kw):
        run_stage1(TagRunOptions(img_root=str(images), out=str(tmp_path / name), dataset="coco2014",
                                 pretrained=tiny_checkpoint, cache_dir=cache_dir, loader_threads=0, **kw))
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(a[0].shape[2]) or real(*a, **k))
    run("fused", attention="fused")
    assert calls and set(calls) == {197}  # 12 layers of 224-px crops (14 x 14 patches and the class token)
    run_config = json.loads((tmp_path / "fused" / "parts" / "run_config.json").read_text())
    assert run_config["config"]["attention"] == "fused"
    calls.clear()
    run("exact")
    assert not calls  # the CPU default is exact
    for a, b in zip(read_jsonl(tmp_path / "fused" / "tags.jsonl"), read_jsonl(tmp_path / "exact" / "tags.jsonl")):
        assert a["tags"] == b["tags"] and max(abs(x - y) for x, y in zip(a["scores"], b["scores"])) < 1e-5


def test_bad_image_skipped_unless_strict(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir):
    (image_folder / "e_broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    run_stage1(options(image_folder, classes_file, tmp_path / "out", tiny_checkpoint, cache_dir))
    ids = [r["id"] for r in read_jsonl(tmp_path / "out" / "tags.jsonl")]
    assert ids == ["a_grey", "b_rgba", "c_rgb", "d_same"]
    assert (tmp_path / "out" / "skipped.txt").read_text().startswith("e_broken\t")
    with pytest.raises(UserError, match="e_broken.jpg: unreadable image"):
        run_stage1(options(image_folder, classes_file, tmp_path / "strict", tiny_checkpoint, cache_dir, strict=True))


def test_user_mistakes(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir):
    split = tmp_path / "split.txt"
    split.write_text("a_grey cat\nzz_missing\n")
    with pytest.raises(UserError, match=r"split.txt: 1 listed images not found .*first: zz_missing"):
        run_stage1(options(image_folder, classes_file, tmp_path / "o", tiny_checkpoint, cache_dir, split=str(split)))
    split.write_text("a_grey dragon\n")
    with pytest.raises(UserError, match="split.txt:1: unknown class label 'dragon'"):
        run_stage1(options(image_folder, classes_file, tmp_path / "o", tiny_checkpoint, cache_dir, split=str(split)))
    run_stage1(options(image_folder, classes_file, tmp_path / "o", tiny_checkpoint, cache_dir))
    with pytest.raises(UserError, match="holds outputs made with another 'method' setting"):
        run_stage1(options(image_folder, classes_file, tmp_path / "o", tiny_checkpoint, cache_dir, method="coarse"))
    run_stage1(options(image_folder, classes_file, tmp_path / "o", tiny_checkpoint, cache_dir, method="coarse",
                       overwrite=True))
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ncat\n")
    with pytest.raises(UserError, match="dup.txt:2: duplicate class name 'cat'"):
        run_stage1(TagRunOptions(img_root=str(image_folder), out=str(tmp_path / "x"), classes=str(dup)))


def test_cli_prints_one_line_errors(tmp_path, image_folder):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tools" / "gen_tags.py"), "--img-root", str(image_folder),
           "--dataset", "voc2007", "--split", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope.txt'}: --split file not found"
    cmd[cmd.index("--dataset") + 1] = "voc2099"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("error: argument --dataset: invalid choice: 'voc2099'")


def test_torchrun_two_ranks_byte_identical(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir):
    """A real 2-process torchrun (gloo barrier) writes exactly what one process writes."""
    args = ["tools/gen_tags.py", "--img-root", str(image_folder), "--classes", str(classes_file[0]),
            "--background", str(classes_file[1]), "--pretrained", tiny_checkpoint, "--cache-dir", cache_dir,
            "--log-level", "WARNING"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-port", "29533", *args,
                          "--out", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr
    for name in ("tags.jsonl", "tags.txt"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_one_pixel_and_very_large_images(tmp_path, classes_file, tiny_checkpoint, cache_dir):
    root = tmp_path / "odd"
    root.mkdir()
    write_image(root / "dot.png", (1, 1))
    write_image(root / "huge.jpg", (3000, 4500))
    run_stage1(options(root, classes_file, tmp_path / "out", tiny_checkpoint, cache_dir, max_side=320))
    records = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "tags.jsonl")}
    assert set(records) == {"dot", "huge"}
    for r in records.values():
        assert len(r["scores"]) == 5 and all(s == s for s in r["scores"]) and r["tags"]  # no NaN, a tag


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_can_be_turned_off(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir, capsys,
                                        progress):
    run_stage1(options(image_folder, classes_file, tmp_path / "out", tiny_checkpoint, cache_dir, progress=progress))
    assert ("tagging:" in capsys.readouterr().err) is progress


def test_reader_threads_give_the_same_results(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir,
                                             monkeypatch):
    """With reader threads the part file is appended off the main thread (its fsync no longer
    stalls the model); the outputs are the same."""
    outputs = []
    appended_by = []
    real_append = PartFile.append
    monkeypatch.setattr(PartFile, "append", lambda part, records: appended_by.append(threading.current_thread())
                        or real_append(part, records))
    for threads in (0, 2):
        out = tmp_path / f"out{threads}"
        appended_by.clear()
        run_stage1(options(image_folder, classes_file, out, tiny_checkpoint, cache_dir, loader_threads=threads))
        outputs.append((out / "tags.jsonl").read_text())
        main = [thread is threading.main_thread() for thread in appended_by]
        assert main and all(main) == (threads == 0) and any(main) == (threads == 0), (threads, main)
    assert outputs[0] == outputs[1] and outputs[0]


def test_part_file_appends_only_inside_the_output_folder(tmp_path):
    out = tmp_path / "out"
    outside = tmp_path / "outside.jsonl"
    outside.write_text("precious\n")
    part = PartFile(out / "parts" / "rank-0-of-1.jsonl", out)
    part.path.parent.mkdir(parents=True)
    part.path.symlink_to(outside)
    with pytest.raises(UserError, match=rf"^{part.path}: would be written outside {out} \(it leads to {outside}\)$"):
        part.append([{"id": "a"}])
    part.path.unlink()
    part.path.parent.rmdir()
    part.path.parent.symlink_to(tmp_path, target_is_directory=True)  # the folder linked out instead
    with pytest.raises(UserError, match="would be written outside"):
        part.append([{"id": "a"}])
    assert outside.read_text() == "precious\n" and not (tmp_path / "rank-0-of-1.jsonl").exists()
    part.path.parent.unlink()
    part.append([{"id": "a"}])  # a plain part file is appended as before
    assert part.load() == {"a": {"id": "a"}}


@pytest.mark.parametrize("threads", [0, 2])
def test_part_file_linked_outside_is_refused(tmp_path, image_folder, classes_file, tiny_checkpoint, cache_dir,
                                             threads):
    """A part file replaced by a link to a file outside ``--out`` is never appended to, whether
    the appends run inline or in the background writer."""
    out = tmp_path / "out"
    outside = tmp_path / "outside.jsonl"
    outside.write_text("precious\n")
    (out / "parts").mkdir(parents=True)
    (out / "parts" / "rank-0-of-1.jsonl").symlink_to(outside)
    with pytest.raises(UserError, match=r"rank-0-of-1.jsonl: would be written outside "):
        run_stage1(options(image_folder, classes_file, out, tiny_checkpoint, cache_dir, loader_threads=threads))
    assert outside.read_text() == "precious\n" and not (out / "tags.jsonl").exists()


def test_cli_refuses_a_part_file_linked_outside_in_one_line(tmp_path, image_folder, tiny_checkpoint, cache_dir):
    out = tmp_path / "out"
    outside = tmp_path / "outside.jsonl"
    outside.write_text("precious\n")
    (out / "parts").mkdir(parents=True)
    part = out / "parts" / "rank-0-of-1.jsonl"
    part.symlink_to(outside)
    cmd = [sys.executable, str(ROOT / "tools" / "gen_tags.py"), "--img-root", str(image_folder),
           "--dataset", "voc2007", "--pretrained", tiny_checkpoint, "--cache-dir", cache_dir, "--out", str(out),
           "--log-level", "WARNING"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: {part}: would be written outside {out} (it leads to {outside})\n"
    assert outside.read_text() == "precious\n"
