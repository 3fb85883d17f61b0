"""The packages' layering, as their docstrings (tagclip_cls/__init__.py, wsss/__init__.py) state it,
checked on every import statement of every module (function-level and TYPE_CHECKING ones too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME, FORMATS, CORE, CLI, TAGGING = (f"tagclip_cls.{n}" for n in ("runtime", "formats", "core", "cli", "tagging"))
CRF, EVALUATION, SEG, MASKS, APPS = (f"wsss.{n}" for n in ("crf", "evaluation", "seg", "masks", "apps"))
#: what each layer may import besides itself (written out, not derived from the code it checks)
ALLOWED = {
    RUNTIME: set(),
    FORMATS: {RUNTIME},
    CORE: {RUNTIME, FORMATS},
    CLI: {RUNTIME, FORMATS, CORE},
    TAGGING: {RUNTIME, FORMATS, CORE, CLI},
    CRF: set(),
    EVALUATION: {RUNTIME, FORMATS, CORE},
    SEG: {RUNTIME, FORMATS, CORE, EVALUATION, CRF},
    MASKS: {RUNTIME, FORMATS, CORE, CLI, CRF},
    APPS: {RUNTIME, FORMATS, CORE, CLI, TAGGING, CRF, EVALUATION, SEG, MASKS},
}
#: the two packages' own __init__ modules only name their entry points, imported on first use
FACADES = {"tagclip_cls", "wsss"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; None for modules outside both packages."""
    parts = module.split(".")
    if parts[0] not in FACADES:
        return None
    return ".".join(parts[:2])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            if not node.module:  # `from . import x`: x is a module of that package
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def package_modules() -> list[Path]:
    return sorted(p for root in FACADES for p in (REPO / root).rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in package_modules()
                if module_name(p) not in FACADES and layer_of(module_name(p)) not in ALLOWED]
    assert unplaced == [], "place these in ALLOWED and in the package docstring's layers"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_lies_below(layer):
    wrong = []
    for path in package_modules():
        if layer_of(module_name(path)) != layer or module_name(path) in FACADES:
            continue
        for line, target in imported_modules(path):
            target_layer = layer_of(target)
            if target_layer is not None and target_layer != layer and target_layer not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert wrong == []


def test_relative_imports_resolve(tmp_path, monkeypatch):
    """The scanner itself: a relative import counts as the module it names."""
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    module = tmp_path / "tagclip_cls" / "runtime" / "x.py"
    module.parent.mkdir(parents=True)
    module.write_text("from .errors import UserError\nfrom ..core import models\n"
                      "def f():\n    from . import ids\n")
    assert sorted(imported_modules(module)) == [(1, "tagclip_cls.runtime.errors"), (2, "tagclip_cls.core"),
                                        (4, "tagclip_cls.runtime"), (4, "tagclip_cls.runtime.ids")]
