"""Imports point downwards only (docs: /work/shared/DESIGN.md): no core module imports a module
of a higher layer, lazily inside a function or not (type-only imports aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "offgrid_nb"

# Lowest first; a module may import its own layer and those below it.
LAYERS = [
    {"errors", "sizes", "names", "refs", "jsonfile", "llama_backend", "catalog"},
    {"config", "manifest", "synthetic", "mirror"},
    {"hub", "bundled_model"},
    {"gguf_info"},
    {"fit"},
    {"sources"},
    {"library"},
    {"download", "corpus"},
    {"chat_template", "engine"},
    {"batching"},
    {"chat", "bench", "embed", "perplexity"},
    {"quality"},
    {"search_fit", "fleet"},
    {"render", "repl", "demo", "cli", "server", "widgets", "__init__"},  # front ends
]
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
