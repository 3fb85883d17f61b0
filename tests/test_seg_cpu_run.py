"""Stage 3 tools run as a user runs them on CPU: mmengine's environment, config and hook dumps
go to the work dir's log file but not to the console, and training and testing flush denormal
floats to zero on every intra-op thread (tests/denormal_probe_hook.py)."""
import json
import os
import re
import subprocess
import sys

import pytest

from test_seg_train import REPO, TINY, data  # noqa: F401  (the synthetic data set fixture)

DUMP_LINES = ("System environment", "Runtime environment", "sys.platform", "GPU number", "Config:",
              "crop_size = (", "Hooks will be executed in the following order")


def _run_tool(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")  # two intra-op threads, CPU only
    proc = subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """Console output and work dir of a 4-iteration tools/train_seg.py run with the probe hook."""
    tmp = tmp_path_factory.mktemp("cpu_run")
    config = tmp / "tiny_probe.py"
    config.write_text(f"_base_ = [{TINY!r}]\ncustom_imports = dict(imports=['wsss.seg.register', "
                      f"'denormal_probe_hook'], allow_failed_imports=False)\n"
                      f"custom_hooks = [dict(type='SegResultsTableHook'), dict(type='DenormalProbe')]\n")
    work = tmp / "work"
    console = _run_tool([REPO / "tools/train_seg.py", config, "--pseudo-masks", data / "pseudo_masks",
                         "--data-root", data, "--work-dir", work, "--cfg-options", "train_cfg.max_iters=4",
                         "train_cfg.val_interval=4", "default_hooks.checkpoint.interval=4",
                         "default_hooks.logger.interval=1"], tmp)
    return console, config, work


def test_console_shows_progress_but_no_setup_dump(run):
    console, _, work = run
    assert [line for line in DUMP_LINES if line in console] == []
    assert re.search(r"Iter\(train\) \[4/4\]", console) and "mIoU" in console
    assert f"[train_seg] done; checkpoints and results_val.json/.md in {work}" in console
    log = next(work.glob("*/*.log")).read_text()  # the log file keeps everything
    assert [line for line in DUMP_LINES if line not in log] == []
    assert "GPU number: 1" in log and re.search(r"Iter\(train\) \[4/4\]", log)


def test_training_flushes_denormals_on_every_thread(run):
    probe = json.loads((run[2] / "denormal_probe_train.json").read_text())
    assert probe == {"nonzero": 0, "threads": 2}


def test_test_tool_is_quiet_and_flushes_denormals(data, run, tmp_path):
    _, config, work = run
    out = tmp_path / "eval"
    console = _run_tool([REPO / "tools/test_seg.py", config, work / "iter_4.pth", "--data-root", data,
                         "--work-dir", out], tmp_path)
    assert [line for line in DUMP_LINES if line in console] == []
    assert re.search(r"\[test_seg\] .*mIoU", console) and "System environment" in next(out.glob("*/*.log")).read_text()
    assert json.loads((out / "denormal_probe_test.json").read_text()) == {"nonzero": 0, "threads": 2}
