"""The package works from any folder: the wheel built from the checkout's files, installed into a
fresh virtual environment (the dependencies seen from the project's own environment), ships the
data files, tags an image with its Python API and runs every console script, from a folder
outside the checkout with no PYTHONPATH. Also: the editable install reads the checkout's data
and tools, pyproject's dependencies are requirements.txt's, and every tool has a console script."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tagclip_cls.core.text import load_templates
from tagclip_cls.runtime.resources import data_root

from conftest import TINY

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
TOOL_PACKAGE = "tagclip_wsss_tools"  # tools/ in the wheel (setup.py)
PACKAGED_DATA = "tagclip_cls/data"  # data/ in the wheel (setup.py, tagclip_cls.runtime.resources)
PACKAGED_CONFIGS = "tagclip_cls/configs"  # configs/ in the wheel

# run inside the installed environment, from a folder outside the checkout
PROBE = """
import json, sys
from pathlib import Path
import numpy as np
import tagclip_cls, wsss
from tagclip_cls import Tagger
from tagclip_cls.core.presets import available_presets, load_preset
from tagclip_cls.core.random_weights import save_random_openai_checkpoint
from tagclip_cls.core.text import load_templates
from tagclip_cls.runtime.resources import data_root
from wsss import MaskGenerator

tiny, presets, templates = (json.loads(arg) for arg in sys.argv[1:])
found = {"tagclip_cls": tagclip_cls.__file__, "wsss": wsss.__file__, "data": str(data_root())}
assert all(Path(p).is_relative_to(sys.prefix) for p in found.values()), found
assert available_presets() == presets, available_presets()
assert [load_preset(name).name for name in presets] == presets
assert load_templates() == templates
save_random_openai_checkpoint("tiny.pt", **tiny, seed=0)
# two classes: encoding a preset's 20 x 85 prompts would only cost time
tagger = Tagger.from_pretrained("tiny.pt", classes=["cat", "person"], background=["sky"], cache_dir="text_cache")
image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
assert tagger(image).scores.shape == (2,)
assert MaskGenerator.from_tagger(tagger)(image, tags=["cat", "person"]).label_map.shape == (48, 64)
# the configs ship too: the demo's and the CLIP-ES one load with their _base_ files
from mmengine.config import Config
from tagclip_cls.runtime.resources import config_file
from wsss.apps.demo import TINY_SEG_CONFIG
assert TINY_SEG_CONFIG.is_relative_to(sys.prefix) and TINY_SEG_CONFIG.is_file(), TINY_SEG_CONFIG
clip_es = config_file("deeplabv2", "deeplabv2_r101-d8_clip-es-20k_voc12aug-321x321.py")
assert Config.fromfile(str(clip_es), import_custom_modules=False).optim_wrapper.optimizer.lr == 2.5e-4
"""


def git_files(*options: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *options], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the project's files: tracked ones and new ones outside data/ (where the datasets
    live), as a clean clone has them; builds leave their by-products there, not in the checkout."""
    copy = tmp_path_factory.mktemp("source")
    new = [name for name in git_files("--others", "--exclude-standard") if not name.startswith("data/")]
    for name in git_files("--cached") + new:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    return copy


def build(source: Path, hook: str, out: Path) -> Path:
    """Run a PEP 517 build hook of setuptools (as pip does, offline, without isolation)."""
    out.mkdir()
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out / proc.stdout.strip().splitlines()[-1]


def fresh_env(where: Path, wheel: Path) -> Path:
    """A virtual environment with ``wheel`` installed into it, then the project environment's
    packages made visible after its own (a path in a .pth file: that folder's .pth files, such as
    the checkout's editable install, stay inactive)."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=120)
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
    Path(own_site, "project_env.pth").write_text("\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    return where


def outside_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def run_help(bin_dir: Path, cwd: Path) -> None:
    """Every console script answers ``--help`` (run side by side: each is a new interpreter)."""
    procs = {name: subprocess.Popen([str(bin_dir / name), "--help"], cwd=cwd, env=outside_env(), text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for name in PROJECT["scripts"]}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.startswith("usage:"), f"{name}: {err}"


def test_requirements_agree_with_pyproject():
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pinned = {str(Requirement(line)) for line in lines if line.strip() and not line.startswith("#")}
    declared = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
    assert {str(Requirement(d)) for d in declared} == pinned
    assert len(declared) == len(pinned)  # no package twice


def test_every_tool_has_a_console_script():
    tools = {path.stem for path in (ROOT / "tools").glob("*.py")}
    targets = {value for value in PROJECT["scripts"].values()}
    assert targets == {f"{TOOL_PACKAGE}.{tool}:main" for tool in tools}
    assert all(name.startswith("tagclip-") for name in PROJECT["scripts"])


def test_checkout_reads_its_data_folder():
    assert Path(data_root()) == ROOT / "data"


def test_wheel_works_outside_the_checkout(source, tmp_path):
    wheel = build(source, "build_wheel", tmp_path / "dist")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    data = [name.removeprefix("data/") for name in git_files("--cached", "data")]
    assert {f"{PACKAGED_DATA}/{name}" for name in data} <= shipped
    configs = [name.removeprefix("configs/") for name in git_files("--cached", "configs")]
    assert configs and {f"{PACKAGED_CONFIGS}/{name}" for name in configs} <= shipped
    env = fresh_env(tmp_path / "env", wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    presets = sorted(Path(name).stem for name in data if name.startswith("presets/"))
    proc = subprocess.run([str(env / "bin" / "python"), "-c", PROBE, json.dumps(TINY), json.dumps(presets),
                           json.dumps(load_templates())],
                          cwd=work, env=outside_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    run_help(env / "bin", work)


def test_editable_install_reads_the_checkout(source, tmp_path):
    """``pip install -e .`` (scripts/install.sh): the package, the tools and the data are the
    checkout's own files, and the console scripts run."""
    env = fresh_env(tmp_path / "env", build(source, "build_editable", tmp_path / "dist"))
    code = ("import sys, tagclip_cls.runtime.resources as r, tagclip_wsss_tools.gen_tags as g; "
            "print(r.__file__, g.__file__, r.data_root(), sep='\\n')")
    proc = subprocess.run([str(env / "bin" / "python"), "-c", code], cwd=tmp_path, env=outside_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(source / "tagclip_cls" / "runtime" / "resources.py"), str(source / "tools" / "gen_tags.py"),
                                   str(source / "data")]
    run_help(env / "bin", tmp_path)
