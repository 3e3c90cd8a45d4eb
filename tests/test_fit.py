"""Memory estimates against what llama.cpp allocates; verdicts; recommend; search with ram_gb."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import replace

import pytest

from offgrid_nb import engine, llama_backend
from offgrid_nb.cli import main
from offgrid_nb.devices import Device, list_devices
from offgrid_nb.errors import InvalidArgumentError, UnsupportedModelError
from offgrid_nb.fit import (
    GB,
    available_memory,
    default_context,
    estimate_memory,
    fit_verdict,
    plan_offload,
    recommend,
    recommended_variant,
)
from offgrid_nb.gguf_info import inspect_file
from offgrid_nb.search_fit import search
from offgrid_nb.synthetic import TinyModelSpec, write_q4_k_m_header, write_tiny_model

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


# --- per-device fit: where the layers go ---------------------------------------------------------
# On the header of Llama-3.1-8B Q4_K_M as llama.cpp's quantizer writes it (real tensor names,
# shapes and types; no weights: synthetic.write_q4_k_m_header). Sizes by hand (Q4_K: 144 bytes
# per 256 weights, Q6_K: 210 per 256):
#   Q4_K layer  = q 9,437,184 + k 2,359,296 + v 2,359,296 + o 9,437,184 + gate/up/down
#                 3 x 33,030,144 + norms 32,768                                 = 122,716,160
#   Q6_K layer  = the same with v 3,440,640 and down 48,168,960 (layers 0-3, 28-31, and
#                 6, 9, ... 27: llama.cpp's use_more_bits)                       = 138,936,320
#   output      = 128256 x 4096 Q6_K 430,940,160 + output_norm 16,384           = 430,956,544
#   token_embd  = 128256 x 4096 Q4_K (stays in RAM)                              = 295,501,824
# At n_ctx 4096 (f16 KV): 16,777,216 of KV per layer, compute 4 x 512 x (33 x 4096 + 6 x 4096)
# = 327,155,712; total 4,912,898,048 + 536,870,912 + 327,155,712 = 5,776,924,672.

GiB = 1 << 30
LAYER_Q4 = 122_716_160 + 16_777_216
LAYER_Q6 = 138_936_320 + 16_777_216
OUTPUT = 430_956_544
COMPUTE_4K = 327_155_712
TOTAL_4K = 5_776_924_672
EMBEDDINGS = 295_501_824


@pytest.fixture(scope="module")
def llama8b(tmp_path_factory):
    return inspect_file(write_q4_k_m_header(tmp_path_factory.mktemp("headers") / "8b.gguf"))


def _card(name, free, total=None, *, unified=False):
    backend = "Metal" if unified else "CUDA"
    return Device(name, "test card", "gpu", backend, free, total or free, unified)


def test_q4_k_m_header_reads_as_the_real_model(llama8b):
    assert llama8b.quant == "Q4_K_M"
    assert llama8b.parameter_count == 8_030_261_248  # Llama-3.1-8B's 8.03B
    # the real file (bartowski's) is 4,920,734,016 bytes; the rest is its tokenizer
    assert llama8b.file_size == pytest.approx(4_920_734_016, rel=0.002)
    assert llama8b.layer_bytes[0] == LAYER_Q6 - 16_777_216
    assert llama8b.layer_bytes[4] == LAYER_Q4 - 16_777_216
    assert llama8b.output_bytes == OUTPUT


def test_24_gb_card_runs_every_layer(llama8b):
    estimate = estimate_memory(llama8b, n_ctx=4096)
    assert estimate.total_bytes == TOTAL_4K
    plan = plan_offload(llama8b, estimate, [_card("CUDA0", 23 * GiB, 24 * GiB)], ram_bytes=16 * GB)
    assert (plan.verdict, plan.gpu_layers, plan.n_layers) == ("gpu", 33, 32)
    assert plan.vram_bytes == TOTAL_4K - EMBEDDINGS  # all but the token embeddings
    assert plan.ram_bytes == EMBEDDINGS


def test_8_gb_card_runs_all_at_4k_and_part_at_32k(llama8b):
    card = [_card("CUDA0", int(7.5 * GiB), 8 * GiB)]
    at_4k = plan_offload(llama8b, estimate_memory(llama8b, n_ctx=4096), card, ram_bytes=16 * GB)
    assert at_4k.verdict == "gpu"  # 5,481,422,848 <= 7.5 GiB - 1 GiB reserve
    # 32k: KV 134,217,728 per layer, compute 4 x 512 x 33 x 32768 + ... = 2,264,924,160.
    # Budget 6.5 GiB = 6,979,321,856 - compute - output = 4,283,441,152, which holds layers
    # 31..16 (8 Q6 + 8 Q4 of 273,154,048 / 256,933,888: 4,240,703,488) but not layer 15.
    at_32k = plan_offload(llama8b, estimate_memory(llama8b, n_ctx=32768), card, ram_bytes=16 * GB)
    assert (at_32k.verdict, at_32k.gpu_layers) == ("partial", 17)
    assert at_32k.summary == "partial (17/33 layers, mostly CPU-bound)"


def test_two_cards_fill_from_the_last(llama8b):
    # 4 GiB each, 3 GiB usable. CUDA1 (last): compute + output + layers 31..16 =
    # 327,155,712 + 430,956,544 + 8 x LAYER_Q6 + 8 x LAYER_Q4 = 3,119,767,552; layer 15 is over.
    # CUDA0: layers 15..0 = 8 x LAYER_Q6 + 8 x LAYER_Q4 = 2,361,655,296 <= 3 GiB.
    cards = [_card("CUDA0", 4 * GiB), _card("CUDA1", 4 * GiB)]
    plan = plan_offload(llama8b, estimate_memory(llama8b, n_ctx=4096), cards, ram_bytes=16 * GB)
    assert plan.verdict == "gpu"
    assert plan.device_layers == (("CUDA0", 16), ("CUDA1", 17))
    assert plan.device_bytes == (("CUDA0", 2_361_655_296), ("CUDA1", 3_119_767_552))
    one = plan_offload(llama8b, estimate_memory(llama8b, n_ctx=4096), cards[1:], ram_bytes=16 * GB)
    assert (one.verdict, one.gpu_layers) == ("partial", 17)
    # RAM: the total less what CUDA1 holds, plus the CPU's own compute buffer
    assert one.ram_bytes == TOTAL_4K - (3_119_767_552 - COMPUTE_4K)


def test_apple_unified_memory_counts_once(llama8b):
    # a 16 GB Mac: Metal's recommended working set 11,453,251,584; the same RAM as the CPU's
    mac = [_card("MTL0", 11_453_251_584, unified=True)]
    estimate = estimate_memory(llama8b, n_ctx=4096)
    plan = plan_offload(llama8b, estimate, mac, ram_bytes=10 * GB)
    assert (plan.verdict, plan.gpu_layers) == ("gpu", 33)
    assert plan.ram_bytes == TOTAL_4K  # not TOTAL_4K + the 5.5 GB on the GPU
    assert plan.ram_verdict == "fits"  # 5.78 GB of 10 GB
    # with 5 GB of RAM free the working set does not help: the whole model is too large
    assert plan_offload(llama8b, estimate, mac, ram_bytes=5 * GB).verdict == "too large"


def test_cpu_build_plans_no_offload(llama8b):
    estimate = estimate_memory(llama8b, n_ctx=4096)
    plan = plan_offload(llama8b, estimate, list_devices(), ram_bytes=16 * GB)
    assert (plan.verdict, plan.gpu_layers, plan.device_layers) == ("cpu", 0, ())
    assert plan.ram_bytes == TOTAL_4K
    assert plan_offload(llama8b, estimate, [], ram_bytes=5 * GB).verdict == "too large"


def test_gpu_reserve_setting(llama8b, monkeypatch):
    card = [_card("CUDA0", 4 * GiB)]
    estimate = estimate_memory(llama8b, n_ctx=4096)
    # reserve 0: 1 GiB more than the 17 layers' 101,457,920 left over = 1,175,199,744, which
    # holds layers 15..8 (3 x LAYER_Q6 + 5 x LAYER_Q4 = 1,164,607,488), not layer 7
    monkeypatch.setenv("OFFGRID_GPU_RESERVE_MB", "0")
    assert plan_offload(llama8b, estimate, card, ram_bytes=16 * GB).gpu_layers == 17 + 8
    monkeypatch.setenv("OFFGRID_GPU_RESERVE_MB", "4096")  # nothing left for layers
    assert plan_offload(llama8b, estimate, card, ram_bytes=16 * GB).verdict == "cpu"


def test_recommend_with_vram_gb(gguf_hub):
    df = recommend(FIT_REPO, ram_gb=8, vram_gb=16)
    assert set(df["offload"]) == {"gpu"}  # tiny models: every layer on a 16 GB card
    assert (df["gpu_layers"] == df["n_layers"]).all()
    assert (df["vram_gb"] > 0).all()
    cpu_only = recommend(FIT_REPO, ram_gb=8)
    assert set(cpu_only["offload"]) == {"cpu"}
    assert (cpu_only["gpu_layers"] == 0).all()
    with pytest.raises(InvalidArgumentError, match="vram_gb"):
        recommend(FIT_REPO, vram_gb=-1)


def test_search_with_vram_gb(gguf_hub):
    df = search(vram_gb=16, ram_gb=8)
    assert "offload" in df.columns
    assert set(df["offload"].dropna()) == {"gpu"}


def test_cli_vram(gguf_hub, gguf_hub_root, capsys):
    assert main(["search", "--vram", "16", "--ram", "8", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"offload": "gpu"' in out
    filename = next(p.name for p in (gguf_hub_root / FIT_REPO).glob("*.gguf"))
    assert main(["inspect", FIT_REPO, filename, "--vram", "16", "--ram", "8"]) == 0
    assert "offload        gpu (" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # argparse refuses it before any request
        main(["inspect", FIT_REPO, filename, "--vram", "0"])
    assert "--vram: must be more than 0" in capsys.readouterr().err
