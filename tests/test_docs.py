"""The documentation: the site builds with warnings as errors, the generated settings page is
current, and every relative link in docs/, README.md and CONTRIBUTING.md leads to a file.

(The Python blocks of the pages run as tests of their own: see ``conftest.py`` at the root.)
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from offgrid_nb import config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_site_builds_without_a_warning(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text(encoding="utf-8")
    for name in ("offgrid_nb.chat.Chat.send", "offgrid_nb.search_fit.search"):
        assert f'id="{name}"' in reference  # the API reference is generated from docstrings


def test_settings_page_is_generated_from_the_code():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import settings_table
    finally:
        sys.path.remove(str(ROOT / "docs"))
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert page == settings_table.render(), "run: python docs/settings_table.py --write"


def test_every_environment_variable_read_is_documented():
    tree = ast.parse(Path(config.__file__).read_text(encoding="utf-8"))
    read = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"(OFFGRID|HF|OLLAMA|LLAMA|XDG)_[A-Z_]+|LOCALAPPDATA", node.value)
    }
    assert read, "config.py reads no environment variable?"
    assert read - set(config.ENVIRONMENT) == set()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_lead_to_files(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = [
        target
        for target in LINK.findall(text)
        if "://" not in target
        and not target.startswith(("#", "mailto:"))
        and not (page.parent / target.split("#")[0]).exists()
    ]
    assert broken == []
