"""Memory estimates against what llama.cpp allocates; verdicts; recommend; search with ram_gb."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import replace

import pytest

from offgrid_nb import engine, llama_backend
from offgrid_nb.cli import main
from offgrid_nb.errors import InvalidArgumentError, UnsupportedModelError
from offgrid_nb.fit import (
    GB,
    available_memory,
    default_context,
    estimate_memory,
    fit_verdict,
    recommend,
    recommended_variant,
)
from offgrid_nb.gguf_info import inspect_file
from offgrid_nb.search_fit import search
from offgrid_nb.synthetic import TinyModelSpec, write_tiny_model

FIT_REPO = "offgrid-test/fit-GGUF"
MiB = 1 << 20


# --- the estimate ------------------------------------------------------------------------------


def test_kv_cache_formula(tiny_model):
    info = inspect_file(tiny_model)  # 2 layers, 2 KV heads of 64
    f16 = estimate_memory(info, n_ctx=512)
    assert f16.kv_cache_bytes == 512 * 2 * 2 * (64 + 64) * 2  # cells * layers * heads * K+V * 2
    assert estimate_memory(info, n_ctx=300).kv_cache_bytes == f16.kv_cache_bytes  # padded to 256s
    q8 = estimate_memory(info, n_ctx=512, kv_type="q8_0")
    assert q8.kv_cache_bytes == f16.kv_cache_bytes * 34 // 64
    assert f16.weights_bytes == info.tensor_data_size
    assert f16.total_bytes == f16.weights_bytes + f16.kv_cache_bytes + f16.compute_bytes
    assert f16.total_gb == f16.total_bytes / 1e9


def test_per_layer_kv_heads_count_only_attention_layers(tiny_model):
    info = replace(inspect_file(tiny_model), n_head_kv_by_layer=(2, 0))  # a hybrid model
    full = estimate_memory(inspect_file(tiny_model), n_ctx=512).kv_cache_bytes
    assert estimate_memory(info, n_ctx=512).kv_cache_bytes == full // 2


def test_default_context_is_the_models_capped_at_4096(tiny_model):
    info = inspect_file(tiny_model)
    assert default_context(info) == estimate_memory(info).n_ctx == 2048
    assert estimate_memory(replace(info, context_length=131_072)).n_ctx == 4096


def test_split_model_weights(tiny_model):
    info = replace(inspect_file(tiny_model), split_count=3)
    assert estimate_memory(info).weights_bytes == 3 * info.tensor_data_size
    assert estimate_memory(info, weights_bytes=12345).weights_bytes == 12345


def test_unknown_architecture_cannot_be_estimated(unknown_arch_model):
    with pytest.raises(UnsupportedModelError, match=r"mystery-arch model.*no block_count"):
        estimate_memory(inspect_file(unknown_arch_model))


@pytest.mark.parametrize(
    "bad", [{"n_ctx": 0}, {"kv_type": "q3_k"}, {"n_batch": -1}, {"n_ctx": True}]
)
def test_bad_estimate_arguments(tiny_model, bad):
    with pytest.raises(InvalidArgumentError):
        estimate_memory(inspect_file(tiny_model), **bad)


# --- calibration: the estimate against llama.cpp's own buffers ---------------------------------

_BUFFER = re.compile(r"(\S+) (\w+) buffer size =\s*([\d.]+) MiB")


def _llama_cpp_buffers(path, n_ctx, monkeypatch) -> dict[str, int]:
    """Bytes of each buffer llama.cpp logs while loading (REPACK copies of mapped tensors left
    out: they replace pages of the mapping that are then never read)."""
    # The default log keeps 200 chunks; graph reservation logs more than that for 4+ layers.
    monkeypatch.setattr(llama_backend, "_LOG", deque(maxlen=100_000))
    llama = llama_backend.llama_cpp().Llama(str(path), n_ctx=n_ctx, verbose=False)
    try:
        buffers: dict[str, int] = {}
        for line in llama_backend.recent_log(100_000):
            match = _BUFFER.search(line)
            if match and "REPACK" not in match.group(1):
                kind = match.group(2)
                buffers[kind] = buffers.get(kind, 0) + int(float(match.group(3)) * MiB)
        return buffers
    finally:
        llama.close()


CALIBRATION = {
    # shape (what dominates the compute buffer) -> (spec, n_ctx)
    "attention-bound": (TinyModelSpec(), 4096),
    "logits-bound": (
        TinyModelSpec(n_layers=4, n_embd=512, n_ff=1408, n_head=8, n_head_kv=4, extra_vocab=8000),
        512,
    ),
    "ffn-bound": (TinyModelSpec(n_embd=256, n_ff=4096, n_head=2, n_head_kv=2), 256),
}


@pytest.mark.parametrize("shape", CALIBRATION)
def test_estimate_within_15_percent_of_llama_cpp(tmp_path, monkeypatch, shape):
    spec, n_ctx = CALIBRATION[shape]
    path = write_tiny_model(tmp_path / "model.gguf", spec)
    buffers = _llama_cpp_buffers(path, n_ctx, monkeypatch)
    assert {"model", "KV", "compute"} <= buffers.keys()
    estimate = estimate_memory(inspect_file(path), n_ctx=n_ctx)
    assert estimate.kv_cache_bytes == pytest.approx(buffers["KV"], rel=0.01)
    assert estimate.compute_bytes == pytest.approx(buffers["compute"], rel=0.15)
    assert estimate.total_bytes == pytest.approx(sum(buffers.values()), rel=0.15)


# --- verdicts ----------------------------------------------------------------------------------


def test_fit_verdict_thresholds():
    assert fit_verdict(80, 100) == "fits"
    assert fit_verdict(81, 100) == "tight"
    assert fit_verdict(100, 100) == "tight"
    assert fit_verdict(101, 100) == "too large"


def test_available_memory():
    assert available_memory(8) == 8 * GB
    assert available_memory(None) > 0
    for bad in (0, -1, "8", True):
        with pytest.raises(InvalidArgumentError):
            available_memory(bad)


# --- recommend -----------------------------------------------------------------------------------


@pytest.fixture
def totals(gguf_hub):
    """Estimated total GB of each fit-GGUF variant at 512 tokens."""
    df = recommend(FIT_REPO, ram_gb=1000, n_ctx=512)
    gguf_hub.requests.clear()
    return dict(zip(df["quant"], df["total_gb"], strict=True))


def test_recommend_reads_one_header_and_marks_the_preferred_quant(gguf_hub, gguf_hub_root):
    df = recommend(FIT_REPO, ram_gb=1000, n_ctx=512)
    assert list(df["quant"]) == ["Q2_K", "Q4_K_M", "Q8_0", "F32"]  # smallest first
    assert set(df["fits"]) == {"fits"}
    assert list(df.loc[df["recommended"], "quant"]) == ["Q4_K_M"]
    assert gguf_hub.requests["resolve"] == 1  # one header per model, not one per variant
    for row in df.itertuples():  # each variant's own weights: its size less the header
        info = inspect_file(gguf_hub_root / FIT_REPO / row.filename)
        assert row.weights_gb * GB == pytest.approx(info.tensor_data_size, abs=64)
    assert df["kv_cache_gb"].nunique() == df["compute_gb"].nunique() == 1


def test_recommend_falls_back_to_what_fits(gguf_hub, totals):
    # Q2_K fits, Q4_K_M and Q8_0 only tightly, F32 not at all: the best that fits is Q2_K.
    ram = (totals["Q2_K"] + totals["Q4_K_M"]) / 2 / 0.8
    df = recommend(FIT_REPO, ram_gb=ram, n_ctx=512)
    assert dict(zip(df["quant"], df["fits"], strict=True)) == {
        "Q2_K": "fits", "Q4_K_M": "tight", "Q8_0": "tight", "F32": "too large",
    }  # fmt: skip
    assert list(df.loc[df["recommended"], "quant"]) == ["Q2_K"]
    assert df.attrs["available_bytes"] == int(ram * GB)


def test_recommend_takes_a_tight_one_when_none_fits(gguf_hub, totals):
    df = recommend(FIT_REPO, ram_gb=totals["Q4_K_M"] * 1.01, n_ctx=512)
    assert "fits" not in set(df["fits"])
    assert list(df.loc[df["recommended"], "quant"]) == ["Q4_K_M"]
    none_fit = recommend(FIT_REPO, ram_gb=totals["Q2_K"] * 0.99, n_ctx=512)
    assert set(none_fit["fits"]) == {"too large"}
    assert not none_fit["recommended"].any()


def test_recommended_variant(gguf_hub, totals):
    assert recommended_variant(FIT_REPO, ram_gb=1000, n_ctx=512).filename == "fit-Q4_K_M.gguf"
    assert recommended_variant(FIT_REPO, ram_gb=totals["Q2_K"] * 0.99, n_ctx=512) is None


def test_recommend_split_model_counts_every_shard(gguf_hub, tiny_model):
    df = recommend("offgrid-test/split-GGUF", ram_gb=1000)
    info = inspect_file(tiny_model)
    assert len(df) == 1
    assert df.at[0, "size"] == info.file_size + 4_000_000
    assert df.at[0, "weights_gb"] * GB == info.tensor_data_size + 4_000_000


def test_recommend_unreadable_header_is_a_row_not_a_failure(gguf_hub):
    df = recommend("offgrid-test/broken-GGUF", ram_gb=1000)
    assert df["fits"].isna().all()
    assert not df["recommended"].any()
    assert df["error"].str.contains("not a GGUF file").all()


def test_recommend_by_query(gguf_hub):
    df = recommend(query="GGUF", ram_gb=1000, n_ctx=512)
    assert set(df["repo_id"]) >= {FIT_REPO, "offgrid-test/split-GGUF"}
    per_repo = df.groupby("repo_id")["recommended"].sum()
    assert per_repo[FIT_REPO] == 1
    assert per_repo["offgrid-test/broken-GGUF"] == 0


def test_recommend_needs_a_repo_or_a_query(gguf_hub):
    for kwargs in ({}, {"repo_id": FIT_REPO, "query": "x"}):
        with pytest.raises(InvalidArgumentError):
            recommend(**kwargs)
    assert sum(gguf_hub.requests.values()) == 0


# --- search(ram_gb=...) and offgrid search --ram -----------------------------------------------


def test_search_with_ram_adds_fits_and_rechooses_the_best_file(gguf_hub):
    # 1 GB: the tiny models fit; the big-vocabulary one is a 1 GiB file, too large.
    df = search(ram_gb=1.0).set_index("id")
    assert df.at[FIT_REPO, "fits"] == "fits"
    assert df.at[FIT_REPO, "best_file"] == "fit-Q4_K_M.gguf"
    assert df.at["offgrid-test/big-vocab-GGUF", "fits"] == "too large"
    assert df.at["offgrid-test/broken-GGUF", "fits"] is None
    small = recommend(FIT_REPO, ram_gb=1000, n_ctx=4096).set_index("quant")["total_gb"]
    ram = (small["Q2_K"] + small["Q4_K_M"]) / 2 / 0.8  # Q4_K_M only tight: Q2_K is picked
    row = search(ram_gb=ram).set_index("id").loc[FIT_REPO]
    assert (row["best_file"], row["fits"]) == ("fit-Q2_K.gguf", "fits")
    assert row["download_command"].endswith("--file fit-Q2_K.gguf")
    assert row["total_gb"] == pytest.approx(small["Q2_K"])


def test_search_fits_only_drops_too_large(gguf_hub):
    df = search(ram_gb=1.0, fits_only=True)
    assert "offgrid-test/big-vocab-GGUF" not in set(df["id"])
    assert FIT_REPO in set(df["id"])
    assert df.attrs["total"] == len(df)
    assert "fits" not in search().columns  # without ram_gb nothing changes
    assert search("no-such-model", ram_gb=1.0).empty


def test_cli_search_ram(gguf_hub, capsys):
    assert main(["search", "--ram", "1", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"fits": "fits"' in out
    assert "big-vocab" not in out


def test_parallel_slots_kv_cache_is_counted_for_every_slot(tiny_model, monkeypatch):
    info = inspect_file(tiny_model)
    estimate = estimate_memory(info, n_ctx=512, parallel=3)
    assert estimate.kv_cache_bytes == 3 * estimate_memory(info, n_ctx=512).kv_cache_bytes
    monkeypatch.setattr(llama_backend, "_LOG", deque(maxlen=100_000))
    loaded = engine.load_model(tiny_model, n_ctx=512, parallel=3)
    try:
        kv = [_BUFFER.search(line) for line in llama_backend.recent_log(100_000)]
        kv = [int(float(m.group(3)) * MiB) for m in kv if m and m.group(2) == "KV"]
        assert kv[-1] == estimate.kv_cache_bytes  # the slots' context, as llama.cpp allocated it
        assert loaded.llama.n_ctx() == 3 * 512
    finally:
        engine.unload_model()
