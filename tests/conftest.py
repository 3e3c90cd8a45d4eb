"""Shared fixtures: generated GGUF models, a Hub folder built from them, our mirror serving it.

Nothing here downloads anything: the Hub our tests talk to is ``offgrid_nb.mirror`` on loopback,
reached through the real ``huggingface_hub`` client.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

os.environ["HF_HUB_DISABLE_XET"] = "1"  # read by huggingface_hub at import
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from offgrid_nb import clear_cache
from offgrid_nb.mirror import MirrorServer
from offgrid_nb.synthetic import write_tiny_model

TOKEN = "hf_test_token_for_gated_repos"


def _ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat().replace("+00:00", "Z")


def _blob(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _repo(root: Path, repo_id: str, meta: dict, files: dict[str, int | Path]) -> None:
    folder = root / repo_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "repo.json").write_text(json.dumps(meta))
    for name, content in files.items():
        if isinstance(content, Path):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(content, folder / name)
        else:
            _blob(folder / name, content)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight llama GGUF (F32), generated once per session."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama-F32.gguf")


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A Hub folder with repos in the styles the real Hub has.

    Sizes are chosen so that size filters have exact answers: for every repo the Q4_K_M file
    is smaller than the Q8_0 file, and only ``offgrid-test/tiny-llama-GGUF`` holds a real model.
    """
    root = tmp_path_factory.mktemp("hub")
    _repo(
        root,
        "TheBloke/Llama-2-7B-Chat-GGUF",
        {"downloads": 2_500_000, "likes": 342, "lastModified": _ago(400), "tags": ["llama"]},
        {
            "llama-2-7b-chat.Q4_K_M.gguf": 3800,
            "llama-2-7b-chat.Q5_K_M.gguf": 4600,
            "llama-2-7b-chat.Q8_0.gguf": 7200,
            "llama-2-7b-chat.Q2_K.gguf": 2800,
            "README.md": 100,
        },
    )
    _repo(
        root,
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        {"downloads": 900_000, "likes": 120, "lastModified": _ago(30), "tags": ["conversational"]},
        {
            "Qwen2.5-7B-Instruct-Q4_K_M.gguf": 4000,
            "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00001-of-00002.gguf": 4000,
            "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00002-of-00002.gguf": 3500,
            "Qwen2.5-7B-Instruct.imatrix": 50,
            "mmproj-Qwen2.5-7B-Instruct-f16.gguf": 900,
        },
    )
    _repo(
        root,
        "meta-llama/Llama-3.2-1B-Instruct-GGUF",
        {"downloads": 5_000_000, "likes": 900, "gated": "manual", "lastModified": _ago(10)},
        {"Llama-3.2-1B-Instruct-Q4_K_M.gguf": 1500, "Llama-3.2-1B-Instruct-Q8_0.gguf": 2500},
    )
    _repo(
        root,
        "unsloth/Qwen3-30B-A3B-GGUF",
        {"downloads": 300_000, "likes": 80, "lastModified": _ago(2)},
        {"Qwen3-30B-A3B-UD-Q4_K_XL.gguf": 17000, "Qwen3-30B-A3B-Q2_K.gguf": 11000},
    )
    _repo(
        root,
        "someone/plain-safetensors",
        {"downloads": 9_000_000, "likes": 5, "tags": ["transformers"]},
        {"model.safetensors": 2000, "config.json": 20},
    )
    _repo(
        root,
        "offgrid-test/tiny-llama-GGUF",
        {"downloads": 12, "likes": 1, "lastModified": _ago(1), "tags": ["conversational"]},
        {"tiny-llama-F32.gguf": tiny_model},
    )
    return root


@pytest.fixture(scope="session")
def mirror(hub_root: Path) -> Iterator[MirrorServer]:
    """Our Hub mirror over ``hub_root``, on an ephemeral loopback port."""
    with MirrorServer(hub_root, tokens=[TOKEN]) as server:
        yield server


@pytest.fixture
def hub(mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MirrorServer:
    """Point offgrid_nb (and huggingface_hub) at the mirror; isolate tokens and folders."""
    monkeypatch.setenv("HF_ENDPOINT", mirror.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OFFGRID_CACHE_DIR", str(tmp_path / "cache"))
    clear_cache()
    mirror.requests.clear()
    return mirror
