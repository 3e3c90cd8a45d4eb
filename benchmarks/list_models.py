"""Listing models across every source: 200 models in our folder, the HF cache, LM Studio,
Ollama, llama.cpp's cache and an extra folder, against listing our own folder alone.

Every model file is a sparse 1 GiB file (a hole: no disk used), so hashing or reading one
would show at once; hashlib.sha256 is counted while listing. Layouts are the tools' own: our
manifests, the HF cache's ``models--*/blobs`` + ``snapshots`` links + ``refs/main``, LM
Studio's ``<org>/<repo>/``, Ollama's manifests and ``sha256-`` blobs (with config blobs),
llama.cpp's flat files and ``manifest=`` JSON. *Cold* is a process's first listing (nothing
parsed yet; the OS file cache is warm), *warm* a repeated one. Runs are interleaved; medians.

    python benchmarks/list_models.py [--models 200] [--runs 15]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from offgrid_nb import jsonfile
from offgrid_nb.library import list_models

GIB = 1 << 30
SOURCES = ("offgrid", "hf-cache", "lmstudio", "ollama", "llama.cpp", "folder")
QUANTS = ("Q2_K", "Q4_K_M", "Q5_K_M", "Q8_0")


def _sparse(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(GIB)
    return path


def _file(i: int) -> tuple[str, str]:
    repo = f"org{i % 5}/Model{i}-7B-Instruct-GGUF"
    return repo, f"Model{i}-7B-Instruct-{QUANTS[i % len(QUANTS)]}.gguf"


def offgrid(root: Path, i: int) -> None:
    repo, name = _file(i)
    path = _sparse(root / repo / name)
    manifest = {
        "repo_id": repo, "revision": "main", "commit": "c" * 40, "filename": name,
        "files": [{"path": name, "sha256": "a" * 64, "size": GIB}],
        "quant": QUANTS[i % len(QUANTS)], "param_size": "7B",
        "downloaded_at": "2026-01-01T00:00:00+00:00",
    }  # fmt: skip
    path.with_name(name + ".offgrid.json").write_text(json.dumps(manifest))


def hf_cache(root: Path, i: int) -> None:
    repo, name = _file(i)
    folder = root / f"models--{repo.replace('/', '--')}"
    blob = _sparse(folder / "blobs" / hashlib.sha256(name.encode()).hexdigest())
    commit = "b" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    link = folder / "snapshots" / commit / name
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))


def lmstudio(root: Path, i: int) -> None:
    repo, name = _file(i)
    _sparse(root / repo / name)


def ollama(root: Path, i: int) -> None:
    def blob(data: bytes | None, digest: str) -> str:
        path = root / "blobs" / f"sha256-{digest}"
        if data is None:
            _sparse(path)
        else:
            path.write_bytes(data)
        return f"sha256:{digest}"

    config = json.dumps({"model_format": "gguf", "file_type": "Q4_K_M", "model_type": "7B"})
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": blob(config.encode(), hashlib.sha256(config.encode()).hexdigest())},
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": blob(None, hashlib.sha256(str(i).encode()).hexdigest()),
            }
        ],
    }
    path = root / "manifests" / "registry.ollama.ai" / "library" / f"model{i}" / "7b"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))


def llama_cpp(root: Path, i: int) -> None:
    repo, name = _file(i)
    owner, short = repo.split("/")
    _sparse(root / f"{owner}_{short}_{name}")
    manifest = root / f"manifest={owner}={short}=latest.json"
    manifest.write_text(json.dumps({"ggufFile": {"rfilename": name}}))


def folder(root: Path, i: int) -> None:
    _sparse(root / f"mine-{i}-Q4_K_M.gguf")


BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "offgrid": offgrid, "hf-cache": hf_cache, "lmstudio": lmstudio, "ollama": ollama,
    "llama.cpp": llama_cpp, "folder": folder,
}  # fmt: skip


def build(root: Path, n_models: int) -> dict[str, int]:
    """``n_models`` spread over the sources (their folders set in the environment)."""
    counts = {}
    for k, source in enumerate(SOURCES):
        n = n_models // len(SOURCES) + (k < n_models % len(SOURCES))
        for i in range(n):
            BUILDERS[source](root / source, k * 10_000 + i)
        counts[source] = n
    os.environ.update(
        OFFGRID_MODELS_DIR=str(root / "offgrid"),
        HF_HUB_CACHE=str(root / "hf-cache"),
        OFFGRID_LMSTUDIO_DIRS=str(root / "lmstudio"),
        OLLAMA_MODELS=str(root / "ollama"),
        LLAMA_CACHE=str(root / "llama.cpp"),
        OFFGRID_MODEL_DIRS=str(root / "folder"),
    )
    return counts


def timed(sources: str, *, cold: bool) -> tuple[float, int, int]:
    """Seconds for one ``list_models()`` with ``OFFGRID_SOURCES=sources``, rows, files hashed."""
    os.environ["OFFGRID_SOURCES"] = sources
    if cold:
        jsonfile._parsed.clear()  # what a fresh process starts with
    hashed = 0
    real = hashlib.sha256

    def counting(*args: object) -> object:
        nonlocal hashed
        hashed += 1
        return real(*args)

    hashlib.sha256 = counting  # type: ignore[assignment]
    try:
        start = time.perf_counter()
        rows = len(list_models())
        return time.perf_counter() - start, rows, hashed
    finally:
        hashlib.sha256 = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        counts = build(Path(tmp), args.models)
        cases = {
            "our folder alone": "offgrid",
            "all sources": "all",
        }
        times: dict[tuple[str, bool], list[float]] = {}
        rows: dict[str, int] = {}
        hashed = 0
        timed("all", cold=False)  # imports and first-use costs out of the way
        for _ in range(args.runs):  # interleaved: cold then warm, one case after the other
            for label, sources in cases.items():
                for cold in (True, False):
                    seconds, rows[label], n = timed(sources, cold=cold)
                    times.setdefault((label, cold), []).append(seconds)
                    hashed += n
    print(f"list_models(): {args.models} models of 1 GiB, {counts}")
    print(
        f"{'case':<18}{'models':>7}{'cold ms':>9}{'warm ms':>9}{'us/model':>10}{'warm / ours':>13}"
    )
    base = statistics.median(times["our folder alone", False])
    for label in cases:
        cold, warm = (statistics.median(times[label, c]) for c in (True, False))
        per_model = warm / rows[label] * 1e6
        print(f"{label:<18}{rows[label]:>7}{cold * 1e3:>9.1f}{warm * 1e3:>9.1f}"
              f"{per_model:>10.0f}{warm / base:>12.1f}x")  # fmt: skip
    print(f"files hashed while listing: {hashed}; {args.runs} interleaved runs, medians")


if __name__ == "__main__":
    main()
