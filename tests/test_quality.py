"""Perplexity and quality as llama-perplexity computes them, on generated and real models."""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from offgrid_nb.cli import main
from offgrid_nb.corpus import dataset_text, sample_text
from offgrid_nb.errors import InvalidArgumentError, NotFoundError
from offgrid_nb.llama_backend import llama_cpp
from offgrid_nb.mirror import MirrorServer
from offgrid_nb.perplexity import perplexity
from offgrid_nb.quality import pareto_front, pick_quant, plot_quality, quality
from offgrid_nb.synthetic import TinyModelSpec, write_tiny_model

# generated models have ASCII byte tokens only (llama.cpp aborts on a byte it lacks)
TEXT = sample_text()[:6000].encode("ascii", "ignore").decode()
WIKI = "= Valkyria Chronicles III =\n\n Senjou no Valkyria 3 : Unrecorded Chronicles .\n" * 40


def direct_ppl(path: Path, text: str, n_ctx: int, chunks: int) -> tuple[float, int]:
    """PPL from llama-cpp-python's own logits (``logits_all``), chunk by chunk, in float64."""
    llama = llama_cpp().Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False)
    try:
        tokens = llama.tokenize(text.encode(), add_bos=True, special=False)
        nll: list[float] = []
        for chunk in range(chunks):
            part = tokens[chunk * n_ctx : (chunk + 1) * n_ctx]
            llama.reset()
            llama.eval([llama.token_bos(), *part[1:]])
            scores = np.asarray(llama.scores[:n_ctx], dtype=np.float64)
            top = scores.max(axis=1, keepdims=True)
            logp = scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))
            nll += [-logp[pos, part[pos + 1]] for pos in range(n_ctx // 2, n_ctx - 1)]
        return float(np.exp(np.mean(nll))), len(nll)
    finally:
        llama.close()


@pytest.fixture(scope="session")
def other_vocab_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = TinyModelSpec(extra_vocab=40, name="other-vocab")
    return write_tiny_model(tmp_path_factory.mktemp("vocab") / "other-F32.gguf", spec)


@pytest.fixture(scope="session")
def tiny_copy(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copy(tiny_model, tmp_path_factory.mktemp("copy") / "tiny-copy-F32.gguf"))


def test_perplexity_equals_a_direct_computation(tiny_model):
    result = perplexity(tiny_model, TEXT, n_ctx=64, chunks=3)
    expected, count = direct_ppl(tiny_model, TEXT, 64, 3)
    assert result.ppl == pytest.approx(expected, rel=1e-5)
    assert (result.chunks, result.tokens_scored, count) == (3, 3 * (64 - 1 - 32), 93)
    assert list(result.per_chunk["chunk"]) == [1, 2, 3]
    assert result.per_chunk["ppl"].iloc[-1] == pytest.approx(result.ppl)
    assert result.ppl_err > 0
    assert result.to_dict()["per_chunk"][0]["chunk"] == 1


def test_chunks_count_as_llama_perplexity_counts(tiny_model):
    result = perplexity(tiny_model, TEXT, n_ctx=65)
    assert result.chunks == result.tokens_total // 65  # whole chunks only
    assert result.tokens_scored == result.chunks * (65 - 1 - 32)


def test_batches_smaller_than_a_chunk_give_the_same_result(tiny_model):
    whole = perplexity(tiny_model, TEXT, n_ctx=64, chunks=2)
    split = perplexity(tiny_model, TEXT, n_ctx=64, chunks=2, batch_size=24)
    assert split.ppl == pytest.approx(whole.ppl, rel=1e-5)


def test_text_from_a_file_and_progress(tiny_model, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    seen = []
    result = perplexity(tiny_model, path, n_ctx=64, chunks=2, progress=seen.append)
    assert result.source == str(path)
    assert [(e.done, e.total) for e in seen] == [(1, 2), (2, 2)]
    assert seen[-1].ppl == pytest.approx(result.ppl)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"text": "too short", "n_ctx": 64}, InvalidArgumentError, "fewer than one chunk"),
        ({"text": TEXT, "n_ctx": 8}, InvalidArgumentError, "at least 16"),
        ({"text": TEXT, "dataset": "wikitext-2"}, InvalidArgumentError, "not both"),
        ({"dataset": "no-such-set"}, NotFoundError, "Unknown dataset"),
        ({"text": Path("/no/such/file.txt")}, NotFoundError, "No such text file"),
    ],
)
def test_clear_errors(tiny_model, options, error, match):
    with pytest.raises(error, match=match):
        perplexity(tiny_model, **options)


def _dataset_mirror_root(root: Path) -> Path:
    folder = root / "datasets" / "ggml-org" / "ci"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "wikitext-2-raw-v1.zip", "w") as archive:
        archive.writestr("wikitext-2-raw/wiki.test.raw", WIKI)
    return root


def test_dataset_through_our_mirror(tmp_path, monkeypatch, tiny_model):
    root = _dataset_mirror_root(tmp_path / "hub")
    with MirrorServer(root) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        assert dataset_text("wikitext-2") == WIKI
        from huggingface_hub import HfApi

        info = HfApi(endpoint=server.url).dataset_info("ggml-org/ci")
        assert [s.rfilename for s in info.siblings] == ["wikitext-2-raw-v1.zip"]
        result = perplexity(tiny_model, dataset="wikitext-2", n_ctx=64, chunks=1)
        assert result.source == "wikitext-2"
    assert dataset_text("wikitext-2") == WIKI  # cached: the mirror is gone


def test_a_missing_dataset_is_a_clear_error(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    with pytest.raises(NotFoundError):
        dataset_text("wikitext-2")


def test_quality_of_a_model_against_itself(tiny_model, tiny_copy):
    df = quality([tiny_copy, tiny_model], reference=tiny_model, text=TEXT, n_ctx=64,
                 chunks=2, speed=False)  # fmt: skip
    assert list(df["reference"]) == [True, False]
    twin = df.iloc[1]
    assert twin["kld"] == pytest.approx(0.0, abs=1e-6)
    assert twin["same_top_pct"] == 100.0
    assert twin["ln_ppl_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert twin["ppl"] == pytest.approx(df.iloc[0]["ppl"])
    assert (df["tokens_scored"] == 2 * 31).all()


def test_top_k_and_tail_samples_estimate_the_exact_kld(tiny_model, gguf_hub_root):
    q2 = gguf_hub_root / "offgrid-test" / "fit-GGUF" / "fit-Q2_K.gguf"
    options = {"text": TEXT, "n_ctx": 64, "chunks": 4, "speed": False}
    exact = quality([tiny_model, q2], top_k=10_000, **options)  # the whole vocabulary
    drawn = quality([tiny_model, q2], top_k=8, tail_samples=256, **options)
    assert exact.iloc[0]["model"] == "tiny-llama-F32"  # the largest file is the reference
    assert exact.iloc[1]["kld"] > 0
    assert drawn.iloc[1]["kld"] == pytest.approx(exact.iloc[1]["kld"], rel=0.05)
    assert drawn.iloc[1]["ppl"] == pytest.approx(exact.iloc[1]["ppl"])
    assert drawn.iloc[1]["same_top_pct"] == exact.iloc[1]["same_top_pct"]


def test_another_vocabulary_is_a_clear_error(tiny_model, other_vocab_model):
    with pytest.raises(InvalidArgumentError, match="another vocabulary"):
        quality([tiny_model, other_vocab_model], reference=tiny_model, text=TEXT, n_ctx=64,
                chunks=1, speed=False)  # fmt: skip


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": ["m-Q8_0", "m-Q4_K_M", "m-Q3_K_S", "m-Q4_0"],
            "quant": ["Q8_0", "Q4_K_M", "Q3_K_S", "Q4_0"],
            "file_size_mb": [280.0, 240.0, 225.0, 250.0],
            "kld": [0.0, 0.05, 0.5, 0.2],
            "generation_tokens_per_sec": [50.0, 70.0, 75.0, 60.0],
            "memory_used_mb": [400.0, 350.0, 330.0, 360.0],
        }
    )


def test_pareto_front_and_pick_quant():
    df = _table()
    assert list(pareto_front(df, "generation_tokens_per_sec", larger_x_better=True)) == [
        True, True, True, False,
    ]  # fmt: skip
    assert pick_quant(df)["quant"] == "Q8_0"
    assert pick_quant(df, min_tokens_per_sec=65)["quant"] == "Q4_K_M"
    assert pick_quant(df, ram_gb=0.33)["quant"] == "Q3_K_S"
    with pytest.raises(NotFoundError):
        pick_quant(df, min_tokens_per_sec=100)
    assert isinstance(plot_quality(df), Figure)


def test_cli_prints_as_llama_perplexity(tiny_model, tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    code = main(["perplexity", str(tiny_model), "-f", str(path), "--ctx", "32", "--chunks", "2"])
    out, _ = capsys.readouterr()
    assert code == 0
    pattern = (
        r"\[1\]\d+\.\d{4},\[2\]\d+\.\d{4},\nFinal estimate: PPL = \d+\.\d{4} \+/- \d+\.\d{5}\n"
    )
    assert re.fullmatch(pattern, out)
    assert main(["perplexity", str(tiny_model), "-f", str(path), "--ctx", "8"]) == 1
    assert capsys.readouterr().err.startswith("error: Invalid n_ctx")


def test_cli_quality_csv(tiny_model, tiny_copy, tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    argv = ["quality", str(tiny_model), str(tiny_copy), "-f", str(path), "--ctx", "32"]
    assert main([*argv, "--chunks", "1", "--no-speed", "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("model,quant,file_size_mb,bits_per_weight,reference,ppl")
    assert len(rows) == 3


# --- the real model and lower variants made from it -------------------------------------------


@pytest.fixture(scope="session")
def real_variants(real_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Q8_0 (a reference of the same vocabulary) and Q3_K_S, requantized from the Q4_K_M."""
    lib = llama_cpp()
    folder = tmp_path_factory.mktemp("real-variants")
    made = {"Q4_K_M": real_model}
    for quant in ("Q8_0", "Q3_K_S"):
        target = folder / f"gemma-3-270m-{quant}.gguf"
        params = lib.llama_model_quantize_default_params()
        params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{quant}")
        params.allow_requantize = True
        status = lib.llama_model_quantize(
            str(real_model).encode(), str(target).encode(), lib.byref(params)
        )
        assert status == 0
        made[quant] = target
    return made


@pytest.mark.real
def test_real_perplexity_equals_a_direct_computation(real_model):
    result = perplexity(real_model, n_ctx=128, chunks=2)
    expected, count = direct_ppl(real_model, sample_text(), 128, 2)
    assert result.ppl == pytest.approx(expected, rel=1e-4)
    assert result.tokens_scored == count == 2 * 63


@pytest.mark.real
def test_real_lower_variant_is_worse(real_variants):
    df = quality(list(real_variants.values()), n_ctx=128, chunks=2, speed=False)
    by_quant = df.set_index("quant")
    assert df.iloc[0]["quant"] == "Q8_0"  # the highest precision is the reference
    q4, q3 = by_quant.loc["Q4_K_M"], by_quant.loc["Q3_K_S"]
    assert q3["ppl"] > q4["ppl"]
    assert q3["kld"] > q4["kld"] > 0
    assert q3["same_top_pct"] < q4["same_top_pct"] < 100
