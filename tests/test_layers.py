"""Imports point downwards only (docs/architecture.md): no core module imports a module of a
higher layer, lazily inside a function or not (type-only imports aside). The layers are the
table of docs/architecture.md, read from it, so the document and the rule cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "offgrid_nb"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _layers() -> list[set[str]]:
    """The modules column of the layer table, lowest layer first."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    table = text.split("<!-- layers:", 1)[1].split("<!-- /layers -->", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if re.match(r"\| \d+ \|", line)]
    return [set(re.findall(r"`(\w+)`", row[2])) for row in rows]


# Lowest first; a module may import its own layer and those below it.
LAYERS = _layers()
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module: Path) -> str:
    """The layer name of a file: ``sources/ollama.py`` -> ``sources``."""
    return module.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(module: Path) -> set[str]:
    """The offgrid_nb modules a file imports at run time (top-level names)."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    package = module.relative_to(PACKAGE).parent.parts
    found: set[str] = set()
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            nodes.append(child)
            if isinstance(child, ast.ImportFrom):
                if child.level == 0:
                    parts = (child.module or "").split(".")
                    if parts[0] == "offgrid_nb" and len(parts) > 1:
                        found.add(parts[1])
                    continue
                base = package[: len(package) - (child.level - 1)]
                target = [*base, *(child.module.split(".") if child.module else [])]
                if target:
                    found.add(target[0])
                else:  # from . import names
                    found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    parts = alias.name.split(".")
                    if parts[0] == "offgrid_nb" and len(parts) > 1:
                        found.add(parts[1])
    return found - {"__version__"}


def test_every_module_has_a_layer():
    modules = {_top(path) for path in PACKAGE.rglob("*.py")}
    assert modules - set(LAYER) == set()


@pytest.mark.parametrize(
    "module",
    sorted(p for p in PACKAGE.rglob("*.py") if LAYER.get(_top(p), 0) < LAYER["render"]),
    ids=lambda p: p.relative_to(PACKAGE).as_posix(),
)
def test_core_modules_import_downwards_only(module):
    own = LAYER[_top(module)]
    upward = {name for name in _imports(module) if LAYER.get(name, 0) > own}
    assert upward == set(), f"{module.name} imports a higher layer: {sorted(upward)}"
