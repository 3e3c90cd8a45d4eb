"""The package's exports: every public name is its function, whatever was imported before, and
``import offgrid_nb`` does not load llama.cpp."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import offgrid_nb as og


def test_a_submodule_imported_first_does_not_replace_its_function():
    for name in og.__all__:
        if importlib.util.find_spec(f"offgrid_nb.{name}") is not None:
            importlib.import_module(f"offgrid_nb.{name}")  # as a panel or a test would
    exported = {name: getattr(og, name) for name in og.__all__ if name != "__version__"}
    assert [n for n, value in exported.items() if isinstance(value, types.ModuleType)] == []
    assert all(callable(value) for value in exported.values())


def test_importing_the_package_does_not_load_llama_cpp():
    code = "import sys, offgrid_nb; print('llama_cpp' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "False"
