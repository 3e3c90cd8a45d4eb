"""Sybil runs every Python block of ``docs/`` and ``README.md`` as a test, top to bottom, one
namespace per page, against our mirror serving generated models under the repo ids and file
names the examples use (the ``docs_hub`` fixture), and with ``offgrid serve`` on its default
port for the REST examples (``docs_server``). A block that needs something the test
machine cannot have is preceded by ``<!-- skip: next "why" -->``, and reported as skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser

os.environ["HF_HUB_DISABLE_XET"] = "1"  # read by huggingface_hub at import
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

# The repos the examples name, each file a generated model quantized as its name says.
DOCS_REPOS = {
    "bartowski/Qwen2.5-7B-Instruct-GGUF": "Qwen2.5-7B-Instruct-{quant}.gguf",
    "Qwen/Qwen2.5-0.5B-Instruct-GGUF": "qwen2.5-0.5b-instruct-{lower}.gguf",
    "TheBloke/Llama-2-7B-Chat-GGUF": "llama-2-7b-chat.{quant}.gguf",
}
QUANTS = ("Q4_K_M", "Q8_0")
SERVE_PORT = 11611  # the port the REST examples name (offgrid serve's default)


@pytest.fixture(scope="session")
def docs_hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hub folder holding ``DOCS_REPOS`` (every variant a few MB) and wikitext-2."""
    from offgrid_nb.synthetic import quantize, write_tiny_model

    made = tmp_path_factory.mktemp("docs_models")
    source = write_tiny_model(made / "docs-F32.gguf")
    files = {q: quantize(source, made / f"{q}.gguf", q) for q in QUANTS}
    root = tmp_path_factory.mktemp("docs_hub")
    for repo, pattern in DOCS_REPOS.items():
        for quant, path in files.items():
            target = root / repo / pattern.format(quant=quant, lower=quant.lower())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    # wikitext-2 as llama.cpp's CI keeps it (offgrid_nb.corpus.DATASETS), holding an ASCII
    # text: the generated models know ASCII bytes only
    from offgrid_nb.corpus import sample_text

    dataset = root / "datasets" / "ggml-org" / "ci"
    dataset.mkdir(parents=True)
    with zipfile.ZipFile(dataset / "wikitext-2-raw-v1.zip", "w") as archive:
        ascii_text = sample_text().encode("ascii", errors="ignore").decode()
        archive.writestr("wikitext-2-raw/wiki.test.raw", ascii_text)
    return root


@pytest.fixture(scope="session")
def docs_mirror(docs_hub_root: Path) -> Iterator[str]:
    """The URL of our mirror over ``docs_hub_root``."""
    from offgrid_nb.mirror import MirrorServer

    with MirrorServer(docs_hub_root) as mirror:
        yield mirror.url


def _docs_env(home: Path, mirror: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": mirror,
        "HF_HOME": str(home / "hf"),
        "OFFGRID_MODELS_DIR": str(home / "models"),
        "OFFGRID_CACHE_DIR": str(home / "cache"),
        "OFFGRID_SOURCES": "offgrid",
    }


@pytest.fixture(scope="module")
def docs_hub(docs_mirror: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every setting pointed at our mirror and at fresh folders, for one page run in a fresh
    working folder, with the examples' models downloaded already
    (``Qwen2.5-7B-Instruct-Q4_K_M`` and ``-Q8_0``)."""
    import offgrid_nb as og
    from offgrid_nb.engine import unload_model

    home = tmp_path_factory.mktemp("docs_home")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _docs_env(home, docs_mirror).items():
            patch.setenv(name, value)
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
            patch.delenv(name, raising=False)
        patch.chdir(home)  # what the examples save ("runs.csv") lands there
        og.clear_cache()
        for quant in QUANTS:
            og.download("bartowski/Qwen2.5-7B-Instruct-GGUF", quant=quant)
        yield docs_mirror
        unload_model()


@pytest.fixture(scope="session")
def docs_server(docs_mirror: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``offgrid serve`` on the port the REST examples name, over its own models folder
    holding ``Qwen2.5-7B-Instruct-Q4_K_M``."""
    home = tmp_path_factory.mktemp("docs_server")
    env = {**os.environ, **_docs_env(home, docs_mirror)}
    cli = [sys.executable, "-m", "offgrid_nb.cli"]
    repo = "bartowski/Qwen2.5-7B-Instruct-GGUF"
    subprocess.run([*cli, "download-hf", repo, "-q", "Q4_K_M"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    command = [*cli, "serve", "--port", str(SERVE_PORT), "--parallel", "2", "--threads", "1"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        line = server.stdout.readline() if server.stdout else ""
        if "/v1" not in line:
            pytest.fail(f"offgrid serve did not start: {server.communicate(timeout=10)[1]}")
        yield f"http://127.0.0.1:{SERVE_PORT}"
    finally:
        server.terminate()
        server.wait(timeout=10)


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["docs/*.md", "README.md"],
    fixtures=["docs_hub", "docs_server"],
).pytest()
