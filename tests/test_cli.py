"""Every tool speaks the same language: instant --help and argument errors (torch not loaded),
one-line errors with exit status 2, the same choices for the same flags."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = sorted(p.name for p in (ROOT / "tools").glob("*.py"))
PRESETS = sorted(p.stem for p in (ROOT / "data" / "presets").glob("*.json"))

# run a tool as its command line would, then report its exit status and the heavy modules it loaded
PROBE = """
import json, runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted({"torch", "open_clip", "mmengine", "mmseg", "cv2"} & set(sys.modules))}))
"""


def probe(tool: str, *args: str) -> tuple[int, list[str], str, str]:
    """Exit status, heavy modules loaded, stdout (without the probe's line) and stderr."""
    proc = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "tools" / tool), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    *out, last = proc.stdout.rstrip("\n").splitlines()
    result = json.loads(last)
    return result["code"], result["heavy"], "\n".join(out), proc.stderr


def test_every_tool_is_covered():
    assert set(TOOLS) == {"compare_results.py", "demo.py", "eval_masks.py", "gen_pseudo_masks.py", "gen_tags.py",
                          "make_random_weights.py", "make_report.py", "prepare_data.py", "run_pipeline.py",
                          "test_seg.py", "train_seg.py"}


@pytest.mark.parametrize("tool", TOOLS)
def test_help_loads_no_heavy_module(tool):
    code, heavy, out, _ = probe(tool, "--help")
    assert code == 0 and "usage:" in out
    assert heavy == []


# a wrong value of a flag each tool takes, and what the one-line error must say
MISTAKES = {
    "gen_tags.py": (["--img-root", ".", "--out", "o", "--dataset", "voc2099"], "invalid choice: 'voc2099'"),
    "gen_pseudo_masks.py": (["--img-root", ".", "--tags", "t.txt", "--out", "o", "--dataset", "voc2012",
                             "--device", "gpu"], "--device 'gpu': use cpu or cuda"),
    "run_pipeline.py": (["--img-root", ".", "--out", "o", "--dataset", "voc2012", "--log-level", "verbose"],
                        "invalid choice: 'VERBOSE'"),
    "demo.py": (["--precision", "half"], "invalid choice: 'half'"),
    "eval_masks.py": (["--pred", "nope", "--gt", ".", "--dataset", "voc2007"], "nope: --pred folder not found"),
    "prepare_data.py": (["mask-split", "--masks", ".", "--dataset", "ade20k", "--out", "s.txt"],
                        "invalid choice: 'ade20k'"),
    "make_random_weights.py": (["--out", "w", "--vision-width", "100"], "multiple of 64"),
    "make_report.py": (["--tags", "nope", "--img-root", ".", "--dataset", "voc2012", "--out", "r.html"],
                       "nope: stage-1 output folder not found"),
    "train_seg.py": (["nope.py", "--pseudo-masks", "."], "nope.py: config file not found"),
    "test_seg.py": (["nope.py", "x.pth"], "nope.py: config file not found"),
    "compare_results.py": (["run", "--highlight", "200"], "'200': expected a number from 0 to 100"),
}


@pytest.mark.parametrize("tool", TOOLS)
def test_argument_mistakes_answer_in_one_line_before_heavy_imports(tool, tmp_path):
    args, expected = MISTAKES[tool]
    code, heavy, _, err = probe(tool, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and expected in err
    assert heavy == []


@pytest.mark.parametrize("tool", ["gen_tags.py", "gen_pseudo_masks.py", "run_pipeline.py", "eval_masks.py"])
def test_dataset_choices_are_the_same_everywhere(tool):
    _, _, out, _ = probe(tool, "--help")
    assert "{" + ",".join(PRESETS) + "}" in out.replace("\n", "").replace(" ", "")


def test_device_cuda_without_a_gpu_is_refused_at_once(monkeypatch):
    code, heavy, _, err = probe("gen_tags.py", "--img-root", ".", "--out", "o", "--dataset", "voc2007",
                                "--device", "cuda")
    from tagclip_cls.runtime.arguments import no_gpu_visible
    if not no_gpu_visible():
        pytest.skip("a GPU may be visible here")
    assert code == 2 and err.strip() == "error: --device cuda asked for, but there is no visible GPU here; " \
                                        "use --device cpu" and heavy == []


def test_tags_jsonl_where_tags_txt_is_expected(tmp_path):
    (tmp_path / "tags.jsonl").write_text('{"id": "a", "scores": [], "tags": []}\n')
    code, heavy, _, err = probe("gen_pseudo_masks.py", "--img-root", str(tmp_path), "--tags",
                                str(tmp_path / "tags.jsonl"), "--dataset", "voc2012", "--out", str(tmp_path / "o"))
    assert code == 2 and heavy == []
    assert err.strip() == (f"error: {tmp_path / 'tags.jsonl'}: this is stage 1's tags.jsonl; pass its tags.txt "
                           f"({tmp_path / 'tags.txt'}) or the folder {tmp_path}")


def test_stage1_folder_stands_for_its_tags_txt(tmp_path):
    from tagclip_cls.formats.tags import tags_split_file
    (tmp_path / "tags.txt").write_text("a cat\n")
    assert tags_split_file(tmp_path) == tmp_path / "tags.txt"
    assert tags_split_file(tmp_path / "tags.txt") == tmp_path / "tags.txt"


def test_make_random_weights_writes_a_marked_checkpoint(tmp_path):
    from tagclip_cls.core.models import load_clip
    code, _, out, err = probe("make_random_weights.py", "--out", str(tmp_path), "--vision-layers", "2",
                              "--vision-width", "64", "--patch-size", "32")
    assert code == 0, err
    path = tmp_path / "random_vit_l2_w64_p32_seed0.pt"
    assert f"wrote {path}" in out
    clip = load_clip(None, str(path))
    assert clip.random_weights and (clip.num_layers, clip.patch_size) == (2, 32)
    code, _, out, _ = probe("make_random_weights.py", "--out", str(tmp_path), "--vision-layers", "2",
                            "--vision-width", "64", "--patch-size", "32")
    assert code == 0 and "exists, kept" in out


def test_cfg_options_parse_as_mmengine_does():
    from tagclip_cls.cli import cfg_options_dict
    from tagclip_cls.runtime.errors import UserError
    assert cfg_options_dict(["train_cfg.max_iters=10", "x=[1,2]", "y=(1,2)", "z=False", "w=abc"]) == {
        "train_cfg.max_iters": 10, "x": [1, 2], "y": (1, 2), "z": False, "w": "abc"}
    with pytest.raises(UserError, match="'max_iters': expected KEY=VALUE"):
        cfg_options_dict(["max_iters"])


@pytest.mark.parametrize("level, shown", [("INFO", False), ("DEBUG", True)])
def test_open_clip_parsing_lines_only_at_debug(level, shown):
    code = ("import logging, open_clip\n"
            "from tagclip_cls.cli import setup_logging\n"
            f"setup_logging({level!r})\n"
            "open_clip.get_tokenizer('ViT-B-16')\n"
            "logging.getLogger('x').info('still shown')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "INFO x: still shown" in proc.stderr
    for line in ("Parsing tokenizer identifier", "Attempting to load config", "Using default SimpleTokenizer"):
        assert (line in proc.stderr) == shown


def test_amp_training_is_refused_without_a_gpu():
    from tagclip_cls.runtime.arguments import no_gpu_visible
    if not no_gpu_visible():
        pytest.skip("a GPU may be visible here")
    code, heavy, _, err = probe("train_seg.py", "configs/tiny/deeplabv2_r18-tiny_voc-64x64.py",
                                "--pseudo-masks", ".", "--amp")
    assert code == 2 and heavy == [] and err.startswith("error: --amp needs a GPU")
