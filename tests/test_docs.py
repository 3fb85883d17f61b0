"""The README and docs/ pages hold no dead commands: every fenced block either runs (``bash`` and
``python`` blocks, in a fresh folder per page, with tiny random weights and synthetic images) or
names what it needs in its info string (``bash needs=weights,dataset``), and every relative link
points to a file. The convention is documented in docs/README.md ("Code blocks")."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt

from conftest import write_image

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = ("bash", "python")
LANGUAGES = (*RUNNABLE, "text")
MARKERS = ("weights", "dataset", "gpu", "machines", "minutes")
LINKED_FOLDERS = ("tools", "configs", "data", "benchmarks", "scripts")
BLOCK_TIMEOUT_S = 600  # the machine the tests run on may be shared: generous, yet a hang still fails
PARSER = MarkdownIt("commonmark")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, the markers of ``needs=`` and its text."""
    line: int
    language: str
    needs: tuple[str, ...]
    code: str

    @property
    def runnable(self) -> bool:
        return self.language in RUNNABLE and not self.needs


def parse_info(info: str) -> tuple[str, tuple[str, ...], list[str]]:
    """The language and ``needs=`` markers of a fence's info string, with what is wrong in it."""
    words = info.split()
    if not words:
        return "", (), ["no language (write bash, python or text)"]
    language, rest = words[0], words[1:]
    problems = [] if language in LANGUAGES else [f"unknown language {language!r} (bash, python or text)"]
    needs: tuple[str, ...] = ()
    for word in rest:
        key, _, value = word.partition("=")
        if key != "needs" or not value:
            problems.append(f"unknown info {word!r} (only needs=MARKER,...)")
            continue
        needs += tuple(value.split(","))
    problems += [f"unknown marker {m!r} (known: {', '.join(MARKERS)})" for m in needs if m not in MARKERS]
    if needs and language not in RUNNABLE:
        problems.append(f"needs= on a {language or 'plain'} block, which is never run")
    return language, needs, problems


def blocks_and_problems(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a markdown text, and one line per badly marked one (``line N: ...``)."""
    blocks, problems = [], []
    for token in PARSER.parse(text):
        if token.type == "code_block":
            problems.append(f"line {token.map[0] + 1}: indented code block (use a fence with an info string)")
        if token.type != "fence":
            continue
        language, needs, wrong = parse_info(token.info)
        line = token.map[0] + 1
        problems += [f"line {line}: {w}" for w in wrong]
        blocks.append(Block(line, language, needs, token.content))
    return blocks, problems


def link_targets(text: str) -> list[str]:
    """Every link and image address in a markdown text."""
    targets = []
    for token in PARSER.parse(text):
        for child in token.children or []:
            if child.type == "link_open":
                targets.append(child.attrs["href"])
            elif child.type == "image":
                targets.append(child.attrs["src"])
    return targets


def broken_links(page: Path) -> list[str]:
    """The relative links of a page whose file does not exist (anchors and web addresses aside)."""
    broken = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path:
            continue
        if not (page.parent / unquote(parts.path)).exists():
            broken.append(target)
    return broken


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# the checker itself, on texts whose right answers are known


def test_marked_and_runnable_blocks_are_told_apart():
    text = "```bash\nls\n```\n\n```bash needs=weights,gpu\nx\n```\n\n```text\nlayout\n```\n\n```python\n1\n```\n"
    blocks, problems = blocks_and_problems(text)
    assert problems == []
    assert [(b.line, b.language, b.needs, b.runnable) for b in blocks] == [
        (1, "bash", (), True), (5, "bash", ("weights", "gpu"), False), (9, "text", (), False),
        (13, "python", (), True)]


@pytest.mark.parametrize("text, problem", [
    ("```\nls\n```\n", "line 1: no language"),
    ("```sh\nls\n```\n", "line 1: unknown language 'sh'"),
    ("\n```bash needs=network\nls\n```\n", "line 2: unknown marker 'network'"),
    ("```bash needs=weights,\nls\n```\n", "line 1: unknown marker ''"),
    ("```bash gpu\nls\n```\n", "line 1: unknown info 'gpu'"),
    ("```text needs=gpu\nx\n```\n", "line 1: needs= on a text block"),
    ("text\n\n    ls -l\n", "line 3: indented code block"),
])
def test_badly_marked_blocks_are_reported(text, problem):
    _, problems = blocks_and_problems(text)
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_broken_relative_links_are_found(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[a](sub/there.md#part) [b](sub/missing.md) ![c](gone.png) [d](https://example.org/x) "
                    "[e](#anchor) [f](sub/there%2Emd)\n")
    assert broken_links(page) == ["sub/missing.md", "gone.png"]


# the README and the pages


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_block_runs_or_is_marked(page):
    _, problems = blocks_and_problems(page.read_text(encoding="utf-8"))
    assert not problems, f"{page_id(page)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_point_to_files(page):
    assert broken_links(page) == [], page_id(page)


def test_readme_states_the_ci_test_command():
    """The README's test command is the one .ci/run runs, in the same order."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("make ")]
    blocks, _ = blocks_and_problems((ROOT / "README.md").read_text(encoding="utf-8"))
    assert ci == ["make test", "make test-kernels"]
    assert any(b.code.split() == ["make", "test", "make", "test-kernels"] for b in blocks)


@pytest.fixture(scope="module")
def docs_environment(tmp_path_factory, tiny_checkpoint) -> dict[str, str]:
    """What every page's runnable blocks see: the project's python first on PATH, the checkout
    importable, tiny random weights as WEIGHTS, a synthetic photo as IMAGE, one text cache."""
    shared = tmp_path_factory.mktemp("docs_shared")
    image = write_image(shared / "photo.jpg", (64, 100), seed=5)
    env = dict(os.environ, WEIGHTS=tiny_checkpoint, IMAGE=str(image), TAGCLIP_CACHE=str(shared / "text_cache"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


def run_block(block: Block, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one block in ``folder``: bash with -euo pipefail, python with WEIGHTS and IMAGE bound."""
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        script = folder / f".block_{block.line}.py"
        script.write_text(block.code)
        bind = ("import os, runpy; runpy.run_path({!r}, run_name='__main__', init_globals="
                "{{'WEIGHTS': os.environ['WEIGHTS'], 'IMAGE': os.environ['IMAGE']}})").format(str(script))
        command = [sys.executable, "-c", bind]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)


RUN_PAGES = [p for p in PAGES if any(b.runnable for b in blocks_and_problems(p.read_text(encoding="utf-8"))[0])]


@pytest.mark.parametrize("page", RUN_PAGES, ids=page_id)
def test_runnable_blocks_run(page, tmp_path, docs_environment):
    folder = tmp_path / "page"
    folder.mkdir()
    for name in LINKED_FOLDERS:
        (folder / name).symlink_to(ROOT / name, target_is_directory=True)
    blocks, _ = blocks_and_problems(page.read_text(encoding="utf-8"))
    for block in (b for b in blocks if b.runnable):
        done = run_block(block, folder, docs_environment)
        assert done.returncode == 0, (f"{page_id(page)}:{block.line}: exit status {done.returncode}\n"
                                      f"{block.code}\n--- stdout\n{done.stdout[-3000:]}\n"
                                      f"--- stderr\n{done.stderr[-3000:]}")
