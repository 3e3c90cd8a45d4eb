"""Models other tools keep (offgrid_nb.sources), used in place: each source's real layout,
names across sources, Hub references (``owner/repo:QUANT``) pulled on first use."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pandas as pd
import pytest

from offgrid_nb import library
from offgrid_nb.bench import benchmark
from offgrid_nb.chat import Chat
from offgrid_nb.cli import main
from offgrid_nb.download import download
from offgrid_nb.engine import load_model, unload_model
from offgrid_nb.errors import (
    AmbiguousError,
    InvalidArgumentError,
    InvalidModelError,
    NotFoundError,
    ReadOnlySourceError,
)
from offgrid_nb.library import find_model, list_models, remove_model, resolve_model
from offgrid_nb.refs import HubModel, parse_hub_ref

REPO = "offgrid-test/fit-GGUF"
SMALL = {"prompt_tokens": 16, "output_tokens": 4, "iterations": 1, "warmup": False}


@pytest.fixture
def fit_files(gguf_hub_root: Path) -> Path:
    """The folder of the tiny model's quantizations (fit-Q2_K.gguf, fit-Q4_K_M.gguf...)."""
    return gguf_hub_root / REPO


@pytest.fixture(autouse=True)
def _unload():
    yield
    unload_model()


def _text(value):
    return None if pd.isna(value) else value


def _rows(df):
    return {row.name: row for row in df.itertuples(index=False)}


def test_every_source_in_its_own_layout(sources, fit_files, monkeypatch):
    cached = sources.hub_download(REPO, "fit-Q4_K_M.gguf")
    for shard in ("split-F32-00001-of-00002.gguf", "split-F32-00002-of-00002.gguf"):
        sources.hub_download("offgrid-test/split-GGUF", shard)
    sources.lmstudio_model(
        "lmstudio-community", "fit-GGUF", "fit-Q8_0.gguf", fit_files / "fit-Q8_0.gguf"
    )
    sources.llama_cpp_model(REPO, "fit-Q2_K.gguf", fit_files / "fit-Q2_K.gguf")
    blob = (fit_files / "fit-Q8_0.gguf").read_bytes()
    sources.ollama_model("tinyllama:1b", blob)
    sources.ollama_model("someone/custom:latest", blob, file_type="F16")
    sources.ollama_model(f"{REPO}:Q2_K", blob, host="hf.co")
    (sources.extra / "mine").mkdir(parents=True)
    (sources.extra / "mine" / "my-model-Q4_K_M.gguf").write_bytes(
        (fit_files / "fit-Q4_K_M.gguf").read_bytes()
    )

    real_sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: pytest.fail("listing hashed a file"))
    rows = _rows(list_models())
    monkeypatch.setattr(hashlib, "sha256", real_sha256)

    expected = {  # name: (source, repo_id, quant, shards)
        "fit-Q4_K_M": ("hf-cache", REPO, "Q4_K_M", 1),
        "split-F32": ("hf-cache", "offgrid-test/split-GGUF", "F32", 2),
        "fit-Q8_0": ("lmstudio", "lmstudio-community/fit-GGUF", "Q8_0", 1),
        "fit-Q2_K": ("llama.cpp", REPO, "Q2_K", 1),
        "tinyllama:1b": ("ollama", None, "Q8_0", 1),
        "someone/custom:latest": ("ollama", None, "F16", 1),
        f"hf.co/{REPO}:Q2_K": ("ollama", REPO, "Q8_0", 1),
        "my-model-Q4_K_M": ("folder", None, "Q4_K_M", 1),
    }
    got = {n: (r.source, _text(r.repo_id), r.quant, r.n_shards) for n, r in rows.items()}
    assert got == expected
    assert rows["fit-Q4_K_M"].path == str(cached)  # used in place: the snapshot file
    assert rows["split-F32"].size > 4_000_000  # both shards counted
    for name, row in rows.items():  # every listed name resolves back to its model
        assert str(find_model(name).path) == row.path
        assert str(find_model(f"{row.source}:{name}").path) == row.path


def test_colliding_names_get_their_source_as_prefix(sources, fit_files):
    download(REPO, "fit-Q4_K_M.gguf")  # ours
    sources.hub_download(REPO, "fit-Q4_K_M.gguf")  # the same file in the HF cache
    q8 = fit_files / "fit-Q8_0.gguf"
    sources.lmstudio_model("a", "fit-GGUF", "fit-Q8_0.gguf", q8)
    sources.extra.mkdir(parents=True)
    (sources.extra / "fit-Q8_0.gguf").write_bytes(q8.read_bytes())

    df = list_models()
    assert sorted(zip(df["name"], df["source"], strict=True)) == [
        ("fit-Q4_K_M", "offgrid"),
        ("folder:fit-Q8_0", "folder"),
        ("hf-cache:fit-Q4_K_M", "hf-cache"),
        ("lmstudio:fit-Q8_0", "lmstudio"),
    ]
    assert find_model("fit-Q4_K_M").source == "offgrid"  # ours keeps the bare name
    assert find_model("hf-cache:fit-Q4_K_M").source == "hf-cache"
    with pytest.raises(AmbiguousError) as caught:  # neither is ours: the name is ambiguous
        find_model("fit-Q8_0")
    assert sorted(caught.value.candidates) == ["folder:fit-Q8_0", "lmstudio:fit-Q8_0"]
    assert find_model("folder:fit-Q8_0").path == sources.extra / "fit-Q8_0.gguf"


def test_missing_unreadable_and_broken_sources_are_skipped(
    sources, fit_files, monkeypatch, tmp_path
):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")
    monkeypatch.setenv("HF_HUB_CACHE", str(not_a_folder))
    monkeypatch.setenv(
        "OFFGRID_LMSTUDIO_DIRS", os.pathsep.join([str(tmp_path / "nowhere"), str(not_a_folder)])
    )
    good = sources.ollama_model("good:latest", (fit_files / "fit-Q2_K.gguf").read_bytes())
    store = good.parents[3]  # manifests/registry.ollama.ai/library/good/latest -> manifests
    layer = '{"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "%s"}]}'
    for name, text in {
        "not-json": "{not json",
        "no-layers": '{"schemaVersion": 2}',
        "missing-blob": layer % f"sha256:{'0' * 64}",
        "escaping-digest": layer % "sha256:../../x",
        "a-list": "[1, 2]",
    }.items():
        (store / "registry.ollama.ai" / "library" / name).mkdir(parents=True)
        (store / "registry.ollama.ai" / "library" / name / "latest").write_text(text)
    sources.llama_cache.mkdir(parents=True)
    (sources.llama_cache / "manifest=a=b=latest.json").write_text("{broken")
    assert list(list_models()["name"]) == ["good:latest"]


def test_a_blob_that_is_not_a_gguf_is_a_clear_error_when_used(sources):
    sources.ollama_model("fake:latest", b"this is not a GGUF file at all" * 100)
    assert list(list_models()["name"]) == ["fake:latest"]  # listing does not open it
    with pytest.raises(InvalidModelError, match="not a GGUF"):
        load_model("fake:latest")
    with pytest.raises(InvalidModelError):
        Chat("ollama:fake:latest")


def test_chat_and_benchmark_by_a_source_name(sources, fit_files):
    sources.ollama_model("tinyllama:1b", (fit_files / "fit-Q8_0.gguf").read_bytes())
    sources.hub_download(REPO, "fit-Q4_K_M.gguf")
    chat = Chat("tinyllama:1b", max_tokens=4, seed=1)
    assert isinstance(chat.send("Hello"), str)
    assert chat.usage.completion_tokens > 0
    result = benchmark("hf-cache:fit-Q4_K_M", **SMALL)
    assert result.model == "fit-Q4_K_M"  # the file's name, not the cache's blob hash
    assert result.summary.loc["generation_tokens_per_sec", "mean"] > 0
    assert benchmark("tinyllama:1b", **SMALL).model == "tinyllama:1b"


def test_hub_references_resolve_to_a_local_copy(sources, gguf_hub):
    cached = sources.hub_download(REPO, "fit-Q4_K_M.gguf")
    q8 = download(REPO, quant="Q8_0")
    gguf_hub.requests.clear()
    assert resolve_model(f"{REPO}:Q4_K_M") == cached
    assert resolve_model(f"hf.co/{REPO}:q4_k_m") == cached
    assert resolve_model(f"{REPO}:Q8_0") == q8
    assert resolve_model(f"{REPO}/fit-Q8_0.gguf") == q8
    assert resolve_model(REPO) == cached  # the best-ranked local variant: Q4_K_M over Q8_0
    assert resolve_model(f"hf.co/{REPO}:latest") == cached
    assert sum(gguf_hub.requests.values()) == 0  # all from the manifests and the cache
    with pytest.raises(NotFoundError) as caught:
        resolve_model(f"{REPO}:Q2_K")
    assert f"offgrid run {REPO}:Q2_K" in str(caught.value)


def test_chat_pulls_a_hub_reference_on_first_use(sources, gguf_hub):
    events = []
    chat = Chat(f"hf.co/{REPO}:Q2_K", max_tokens=4, progress=events.append)
    assert (events[-1].status, events[-1].filename) == ("done", "fit-Q2_K.gguf")
    assert isinstance(chat.send("Hi"), str)
    row = list_models().set_index("name").loc["fit-Q2_K"]
    assert (row["source"], row["repo_id"], row["quant"]) == ("offgrid", REPO, "Q2_K")
    assert row["sha256"]  # a verified download with its manifest
    events.clear()
    Chat(f"{REPO}:Q2_K", max_tokens=4, progress=events.append)
    assert events == []  # already here: nothing downloaded


def test_offgrid_run_pulls_with_the_download_progress(sources, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n"))
    assert main(["run", f"{REPO}:Q4_K_M", "--max-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "Progress: 100.0%" in out
    assert list_models()["name"].tolist() == ["fit-Q4_K_M"]


def test_rm_refuses_other_tools_models_with_their_command(sources, fit_files, capsys):
    blob = (fit_files / "fit-Q8_0.gguf").read_bytes()
    sources.ollama_model("tinyllama:1b", blob)
    cached = sources.hub_download(REPO, "fit-Q4_K_M.gguf")
    with pytest.raises(ReadOnlySourceError) as caught:
        remove_model("tinyllama:1b")
    assert caught.value.hint == "delete it with: ollama rm tinyllama:1b"
    assert main(["rm", "fit-Q4_K_M"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: fit-Q4_K_M is hf-cache's")
    assert f"hf cache rm model/{REPO}" in err
    assert cached.is_file()  # nothing deleted
    assert len(list_models()) == 2


def test_the_sources_setting_turns_sources_off(sources, fit_files, monkeypatch):
    sources.ollama_model("tinyllama:1b", (fit_files / "fit-Q2_K.gguf").read_bytes())
    sources.hub_download(REPO, "fit-Q4_K_M.gguf")
    assert set(list_models()["source"]) == {"ollama", "hf-cache"}  # default: all that exist
    monkeypatch.setenv("OFFGRID_SOURCES", "offgrid,ollama")
    assert list(list_models()["name"]) == ["tinyllama:1b"]
    with pytest.raises(NotFoundError):
        find_model("hf-cache:fit-Q4_K_M")
    monkeypatch.setenv("OFFGRID_SOURCES", "offgrid,docker")
    with pytest.raises(
        InvalidArgumentError, match="Unknown model source in OFFGRID_SOURCES: docker"
    ):
        list_models()


def test_manifests_are_read_once_per_version(sources, fit_files, monkeypatch):
    manifest = sources.ollama_model("tinyllama:1b", (fit_files / "fit-Q2_K.gguf").read_bytes())
    list_models()
    reads = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real(self))
    list_models()
    assert reads == []  # unchanged: nothing re-read
    manifest.write_text(manifest.read_text().replace('"schemaVersion": 2', '"schemaVersion": 2 '))
    list_models()
    assert reads == [manifest]


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("owner/repo", HubModel("owner/repo")),
        ("owner/repo:Q4_K_M", HubModel("owner/repo", quant="Q4_K_M")),
        ("hf.co/owner/repo:Q4_K_M", HubModel("owner/repo", quant="Q4_K_M")),
        ("huggingface.co/owner/repo:latest", HubModel("owner/repo")),
        ("owner/repo/sub/x-Q8_0.gguf", HubModel("owner/repo", file="sub/x-Q8_0.gguf")),
        ("llama3.2:1b", None),
        ("tiny", None),
        ("./models/x.gguf", None),
        ("../a/b", None),
        ("/abs/path", None),
        ("a/b/c", None),
    ],
)
def test_hub_reference_parsing(text, ref):
    assert parse_hub_ref(text) == ref


def test_list_shows_the_source(sources, fit_files, capsys):
    sources.ollama_model("tinyllama:1b", (fit_files / "fit-Q2_K.gguf").read_bytes())
    assert main(["list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["NAME", "SOURCE", "QUANT"]
    assert row.split()[:3] == ["tinyllama:1b", "ollama", "Q8_0"]
    assert library.COLUMNS[:3] == ["name", "source", "path"]
