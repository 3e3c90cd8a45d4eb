"""Sybil runs every Python block of ``docs/`` and ``README.md`` as a test, top to bottom, one
namespace per page, against our mirror serving generated models under the repo ids and file
names the examples use (the ``docs_hub`` fixture). A block that needs something the test
machine cannot have is preceded by ``<!-- skip: next "why" -->``, and reported as skipped.
"""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def docs_hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hub folder holding ``DOCS_REPOS``, every variant a few MB."""
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
    return root


@pytest.fixture(scope="module")
def docs_hub(docs_hub_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our mirror over ``docs_hub_root``, every setting pointed at it and at fresh folders, for
    one page run in a fresh working folder, with the examples' models downloaded already
    (``Qwen2.5-7B-Instruct-Q4_K_M`` and ``-Q8_0``)."""
    import offgrid_nb as og
    from offgrid_nb.engine import unload_model
    from offgrid_nb.mirror import MirrorServer

    home = tmp_path_factory.mktemp("docs_home")
    env = {
        "HF_HOME": str(home / "hf"),
        "OFFGRID_MODELS_DIR": str(home / "models"),
        "OFFGRID_CACHE_DIR": str(home / "cache"),
        "OFFGRID_SOURCES": "offgrid",
    }
    with MirrorServer(docs_hub_root) as mirror, pytest.MonkeyPatch.context() as patch:
        for name, value in {**env, "HF_ENDPOINT": mirror.url}.items():
            patch.setenv(name, value)
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
            patch.delenv(name, raising=False)
        patch.chdir(home)  # what the examples save ("runs.csv") lands there
        og.clear_cache()
        for quant in QUANTS:
            og.download("bartowski/Qwen2.5-7B-Instruct-GGUF", quant=quant)
        yield mirror.url
        unload_model()


pytest_collect_file = Sybil(
    parsers=[PythonCodeBlockParser(), SkipParser()],
    patterns=["docs/*.md", "README.md"],
    fixtures=["docs_hub"],
).pytest()
