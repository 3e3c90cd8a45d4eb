"""The JupyterLab sidebar as pip built it: installed, enabled, small; its Jest tests pass.

``pip install -e .`` builds ``src/`` into ``offgrid_nb/labextension/`` (pyproject's
jupyter-builder hook) and installs it as ``share/jupyter/labextensions/offgrid-nb``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILT = ROOT / "offgrid_nb" / "labextension"
BIN = Path(sys.executable).parent
BUNDLE_BUDGET = 150_000  # bytes of JavaScript the sidebar may add to JupyterLab


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_the_built_extension_is_installed_where_jupyterlab_looks():
    package = json.loads((ROOT / "package.json").read_text())
    built = json.loads((BUILT / "package.json").read_text())
    assert built["name"] == package["name"] == "offgrid-nb"
    assert built["jupyterlab"]["_build"]["load"].startswith("static/remoteEntry.")
    mapping = f'"offgrid_nb/labextension" = "share/jupyter/labextensions/{package["name"]}"'
    assert mapping in (ROOT / "pyproject.toml").read_text()
    installed = Path(sys.prefix) / "share/jupyter/labextensions" / package["name"]
    assert (installed / "package.json").is_file()
    assert json.loads((installed / "install.json").read_text())["packageName"] == "offgrid-nb"


def test_jupyter_lists_the_extension_enabled():
    listed = _run(str(BIN / "jupyter"), "labextension", "list")
    assert listed.returncode == 0, listed.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", listed.stdout + listed.stderr)
    assert re.search(r"offgrid-nb v\S+ enabled OK \(python, offgrid-nb\)", text), text


def test_the_bundle_stays_small():
    scripts = list((BUILT / "static").glob("*.js"))
    size = sum(path.stat().st_size for path in scripts)
    assert scripts
    assert size < BUNDLE_BUDGET, f"{size} bytes of JavaScript"


def test_the_model_layer_passes_its_jest_tests():
    result = _run(str(BIN / "jlpm"), "test", "--ci")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"Tests:\s+(\d+) passed, \1 total", output), output
