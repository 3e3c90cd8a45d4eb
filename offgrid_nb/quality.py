"""Which quantization is worth it: perplexity and KL-divergence of each variant against a
reference, beside speed and memory, as ``llama-perplexity --kl-divergence`` measures them.

The reference (the highest-precision variant unless given) runs first over the same chunks as
:mod:`offgrid_nb.perplexity`; every other variant runs on the reference's tokens, and each
scored token adds to the sums perplexity.cpp's ``kl_divergence()`` keeps: NLL of both models
(so ln(PPL/PPL_ref) is paired per token), KLD(ref || variant), same top token, and
Delta-p = p(target token) - p_ref(target token).

Memory: llama-perplexity writes the reference's whole log-prob rows to a file (2 bytes x
vocabulary per scored token: 510 MiB for 4 chunks of gemma-3's 262k vocabulary, ~80 GB for
wikitext-2). We keep, per scored token, the reference's ``top_k`` largest log-probs with their
ids, and ``tail_samples`` tokens drawn from the rest of its distribution in proportion to their
probability (8 bytes each), its NLL and top token: ~2.6 kB a token with the defaults (64 + 256),
~420 MB for all of wikitext-2 at ``-c 512``, whatever the vocabulary.
What that bound costs: KLD over the top-k is exact; the rest, ``sum p ln(p/q)`` over the tail, is
estimated as the tail's mass times the mean ``ln(p/q)`` of the drawn tokens: unbiased, so the
mean KLD is right (measured within 0.3% of llama-perplexity's on gemma-3-270m Q4_K_M vs Q8_0,
benchmarks/perplexity.py) while each token's value is noisier, which widens the KLD p99
(+5% there). With ``top_k`` >= the vocabulary nothing is drawn and KLD is exact. PPL,
ln(PPL ratio), same-top and Delta-p do not depend on either bound (llama-perplexity rounds the
reference's log-probs to 16 bits and floors them at max - 16, which moves its ln(PPL ratio)
slightly; ours uses the reference's exact NLL).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .bench import benchmark
from .corpus import resolve_text
from .download import download
from .engine import LoadedModel, default_threads, use_model
from .errors import InvalidArgumentError, NotFoundError, RunCancelledError
from .hub import Variant, variants
from .library import model_label, resolve_model
from .llama_backend import llama_cpp
from .names import parse_quant, quant_matches
from .perplexity import (
    Chunking,
    ProgressCallback,
    batch_for,
    check_options,
    chunking,
    log_softmax_rows,
    mean_and_error,
    score_chunks,
    tokenize,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_K = 64
TAIL_SAMPLES = 256
QUALITY_COLUMNS = [
    "model", "quant", "file_size_mb", "bits_per_weight", "reference", "ppl", "ppl_err",
    "ln_ppl_ratio", "ln_ppl_ratio_err", "kld", "kld_err", "kld_p99", "same_top_pct",
    "same_top_err", "rms_dp_pct", "rms_dp_err", "tokens_scored", "chunks",
]  # fmt: skip
SPEED_COLUMNS = ["prompt_tokens_per_sec", "generation_tokens_per_sec", "memory_used_mb"]
MB = 1024 * 1024


@dataclass
class _Reference:
    """What KLD needs of the reference, per scored token (bounded by ``top_k`` + ``samples``)."""

    tokens: list[int]
    plan: Chunking
    n_vocab: int
    ids: np.ndarray  # (count, k) int32: its top-k tokens
    logp: np.ndarray  # (count, k) float32: their log-probs
    tail_ids: np.ndarray  # (count, m) int32: tokens drawn from the rest, in proportion to p
    tail_logp: np.ndarray  # (count, m) float32: their log-probs
    tail: np.ndarray  # (count,) float64: the probability mass outside the top-k
    nll: np.ndarray  # (count,) float64
    top: np.ndarray  # (count,) int32: its most probable token
    rng: np.random.Generator

    @classmethod
    def empty(
        cls, tokens: list[int], plan: Chunking, n_vocab: int, top_k: int, samples: int
    ) -> _Reference:
        count = plan.chunks * plan.scored_per_chunk
        k = min(top_k, n_vocab)
        m = samples if k < n_vocab else 0
        return cls(
            tokens, plan, n_vocab, np.zeros((count, k), np.int32), np.zeros((count, k), np.float32),
            np.zeros((count, m), np.int32), np.zeros((count, m), np.float32), np.zeros(count),
            np.zeros(count), np.zeros(count, np.int32), np.random.default_rng(0),
        )  # fmt: skip

    def keep(self, logits: np.ndarray, targets: np.ndarray, index: int) -> np.ndarray:
        """Store the block's top-k and tail samples; returns its NLL."""
        top, lse = log_softmax_rows(logits)
        norm = top + lse
        rows = np.arange(len(targets))
        k, m = self.ids.shape[1], self.tail_ids.shape[1]
        ids = np.argpartition(logits, len(logits[0]) - k, axis=1)[:, -k:]
        span = slice(index, index + len(targets))
        self.ids[span] = ids
        self.logp[span] = logits[rows[:, None], ids] - norm[:, None]
        self.nll[span] = norm - logits[rows, targets]
        self.top[span] = logits.argmax(axis=1)
        if m:
            p = np.exp(logits - norm[:, None].astype(np.float32))
            p[rows[:, None], ids] = 0.0
            cdf = np.cumsum(p, axis=1, dtype=np.float64)
            mass = cdf[:, -1]
            draws = self.rng.random((len(rows), m)) * mass[:, None]
            pairs = zip(cdf, draws, strict=True)
            picked = np.stack([np.searchsorted(c, d, side="right") for c, d in pairs])
            picked = np.minimum(picked, self.n_vocab - 1).astype(np.int32)
            self.tail[span] = mass
            self.tail_ids[span] = picked
            self.tail_logp[span] = logits[rows[:, None], picked] - norm[:, None]
        return self.nll[span]


class _Divergence:
    """perplexity.cpp's ``kl_divergence_result``: running sums over the scored tokens."""

    def __init__(self, reference: _Reference) -> None:
        self.ref = reference
        self.kld = np.zeros(len(reference.nll), np.float32)  # per token, for the p99
        self.sums = dict.fromkeys(
            ("nll", "nll2", "base", "base2", "cross", "kld", "kld2", "dp2", "dp4"), 0.0
        )
        self.same_top = 0

    def score(self, logits: np.ndarray, targets: np.ndarray, index: int) -> np.ndarray:
        ref, span = self.ref, slice(index, index + len(targets))
        top, lse = log_softmax_rows(logits)
        norm = top + lse
        rows = np.arange(len(targets))
        nll = norm - logits[rows, targets]
        ids, logp_ref = ref.ids[span], ref.logp[span].astype(np.float64)
        logq = logits[rows[:, None], ids] - norm[:, None]
        p = np.exp(logp_ref)
        kld = (p * (logp_ref - logq)).sum(axis=1)
        if ref.tail_ids.shape[1]:  # the rest: its mass x the mean log-ratio of its draws
            drawn = ref.tail_ids[span]
            log_ratio = ref.tail_logp[span] - (logits[rows[:, None], drawn] - norm[:, None])
            kld += ref.tail[span] * log_ratio.mean(axis=1)
        base = ref.nll[span]
        dp = np.exp(-nll) - np.exp(-base)
        self.kld[span] = kld
        self.same_top += int((logits.argmax(axis=1) == ref.top[span]).sum())
        s = self.sums
        for key, values in (("nll", nll), ("base", base), ("kld", kld), ("dp2", dp * dp)):
            s[key] += float(values.sum())
        s["nll2"] += float((nll * nll).sum())
        s["base2"] += float((base * base).sum())
        s["cross"] += float((nll * base).sum())
        s["kld2"] += float((kld * kld).sum())
        s["dp4"] += float((dp**4).sum())
        return nll

    def row(self, count: int) -> dict[str, float]:
        """The ``====== ... statistics ======`` figures llama-perplexity prints."""
        s = self.sums
        log_ppl, log_ppl_err = mean_and_error(s["nll"], s["nll2"], count, min_count=10)
        log_base, log_base_err = mean_and_error(s["base"], s["base2"], count, min_count=10)
        cov = 0.0
        if count >= 10:
            cov = (s["cross"] / count - (s["nll"] / count) * (s["base"] / count)) / (count - 1)
        ratio_var = log_ppl_err**2 + log_base_err**2 - 2.0 * cov
        kld, kld_err = mean_and_error(s["kld"], s["kld2"], count, min_count=10)
        mse, mse_err = mean_and_error(s["dp2"], s["dp4"], count, min_count=10)
        rms = float(np.sqrt(mse))
        same = self.same_top / count
        return {
            "ppl": float(np.exp(log_ppl)),
            "ppl_err": float(np.exp(log_ppl) * log_ppl_err),
            "ln_ppl_ratio": log_ppl - log_base,
            "ln_ppl_ratio_err": float(np.sqrt(max(ratio_var, 0.0))),
            "kld": kld,
            "kld_err": kld_err,
            "kld_p99": float(np.percentile(self.kld[:count], 99.0)),
            "same_top_pct": 100.0 * same,
            "same_top_err": 100.0 * float(np.sqrt(same * (1 - same) / max(count - 1, 1))),
            "rms_dp_pct": 100.0 * rms,
            "rms_dp_err": 100.0 * (0.5 / rms * mse_err if rms > 0 else 0.0),
        }


def _bits_per_weight(loaded: LoadedModel) -> float:
    lib, model = llama_cpp(), loaded.llama._model.model
    return lib.llama_model_size(model) * 8 / max(lib.llama_model_n_params(model), 1)


def _describe(loaded: LoadedModel, path: Path, label: str) -> dict[str, Any]:
    return {
        "model": label,
        "quant": loaded.info.quant,
        "file_size_mb": path.stat().st_size / MB,
        "bits_per_weight": _bits_per_weight(loaded),
    }


def check_quants(quants: list[str] | None) -> list[str] | None:
    """``quants`` checked: a list of quantization names (``["Q4_K_M", "Q8_0"]``), or None.

    Raises:
        InvalidArgumentError: not a list, or a name that is no quantization.
    """
    if quants is None:
        return None
    if not isinstance(quants, list) or not quants:
        raise InvalidArgumentError(
            f"Invalid quants: {quants!r} (must be a list of quantizations)",
            hint='e.g. ["Q4_K_M", "Q8_0"]',
        )
    for quant in quants:
        if not isinstance(quant, str) or parse_quant(quant) is None:
            raise InvalidArgumentError(
                f"Invalid quantization: {quant!r}", hint="e.g. Q4_K_M, Q8_0, F16"
            )
    return quants


def _local_models(
    models_or_repo: str | list[str | os.PathLike[str]],
    quants: list[str] | None,
    models_dir: str | os.PathLike[str] | None,
    cancel: threading.Event | None,
) -> list[tuple[str, Path]]:
    """``(label, path)`` of each model: local ones resolved, a repo's variants downloaded."""
    if isinstance(models_or_repo, (list, tuple)):
        found = [(m, resolve_model(m)) for m in models_or_repo]
        chosen = [(model_label(m, f), f.resolve()) for m, f in found]
        return [(label, path) for label, path in chosen if _wanted(path.name, quants)]
    repo = str(models_or_repo)
    return [
        (v.quant or v.filename, download(repo, v.filename, models_dir=models_dir, cancel=cancel))
        for v in repo_variants(repo, quants)
    ]


def repo_variants(repo: str, quants: list[str] | None = None) -> list[Variant]:
    """The variants of a Hub repo that :func:`quality` measures (of ``quants``, if given).

    Raises:
        InvalidArgumentError: not an ``owner/name`` repo id.
        NotFoundError: no such repo, or no variant of those quants.
    """
    picked = [v for v in variants(repo) if _wanted(v.filename, quants) and v.quant]
    if not picked:
        raise NotFoundError(
            f"{repo} has no GGUF variant{' among ' + ','.join(quants) if quants else ''}",
            hint="list them with `offgrid files REPO`",
        )
    return picked


def _wanted(name: str, quants: list[str] | None) -> bool:
    if not quants:
        return True
    return any(quant_matches(parse_quant(name), q) for q in quants)


def _pick_reference(
    models: list[tuple[str, Path]], reference: str | os.PathLike[str] | None
) -> int:
    """Index of the reference: as given (a label, quant or path), else the largest file."""
    if reference is None:
        return max(range(len(models)), key=lambda i: models[i][1].stat().st_size)
    for i, (label, path) in enumerate(models):
        if str(reference) in (label, str(path), path.name) or quant_matches(
            parse_quant(path.name), str(reference)
        ):
            return i
    models.append((str(reference), resolve_model(reference).resolve()))
    return len(models) - 1


def quality(
    models_or_repo: str | list[str | os.PathLike[str]],
    *,
    reference: str | os.PathLike[str] | None = None,
    quants: list[str] | None = None,
    text: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    n_ctx: int = 512,
    chunks: int | None = None,
    batch_size: int | None = None,
    top_k: int = TOP_K,
    tail_samples: int = TAIL_SAMPLES,
    speed: bool = True,
    speed_options: dict[str, Any] | None = None,
    n_threads: int | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> pd.DataFrame:
    """Quality (and speed) of every variant of a model, against a reference, in one table.

    Args:
        models_or_repo: a Hub repo id (its variants are downloaded, resumably) or a list of
            local models (names or paths) sharing one vocabulary.
        reference: the variant to compare with (a quant, name or path; default: the largest
            file, i.e. the highest precision: BF16/F16/Q8_0).
        quants: only these quantizations (e.g. ``["Q4_K_M", "Q8_0"]``).
        text, dataset: what to measure on (see :func:`offgrid_nb.perplexity.perplexity`).
        n_ctx, chunks, batch_size: chunking as llama-perplexity's ``-c``, ``--chunks``, ``-b``.
        top_k: reference log-probs kept per scored token (see the module docstring).
        tail_samples: tokens drawn from the rest of the reference's distribution per token.
        speed: add prompt/generation tokens/s and memory from :func:`offgrid_nb.bench.benchmark`.
        speed_options: keyword arguments for that benchmark.
        n_threads: CPU threads (default: physical cores).
        models_dir: where a repo's variants are downloaded.
        progress: called with a :class:`~offgrid_nb.perplexity.ChunkProgress` after each chunk.
        cancel: set it to stop between decodes.

    Returns:
        One row per variant (reference first): :data:`QUALITY_COLUMNS` (+ :data:`SPEED_COLUMNS`).

    Raises:
        InvalidArgumentError: a variant of another vocabulary, a bad ``top_k``/``n_ctx``, a
            text shorter than one chunk.
        NotFoundError: no such model, repo variant or dataset.
        RunCancelledError: ``cancel`` was set (a repo's download stopped: DownloadCancelledError).
    """
    for name, value, low in (("top_k", top_k, 1), ("tail_samples", tail_samples, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidArgumentError(f"Invalid {name}: {value!r} (must be >= {low})")
    check_options(n_ctx, chunks, batch_size)
    content, _ = resolve_text(text, dataset)
    models = _local_models(models_or_repo, check_quants(quants), models_dir, cancel)
    if not models:
        raise InvalidArgumentError("quality() needs at least one model")
    first = _pick_reference(models, reference)
    order = [first] + [i for i in range(len(models)) if i != first]
    threads = n_threads or default_threads()
    rows: list[dict[str, Any]] = []
    ref: _Reference | None = None
    for i in order:
        label, path = models[i]
        with use_model(path, n_ctx=n_ctx, n_threads=threads, parallel=1) as loaded:
            row = _describe(loaded, path, label)
            tokens = tokenize(loaded, content)
            if ref is None:
                plan = chunking(len(tokens), n_ctx, batch_for(loaded, batch_size), chunks)
                ref = _Reference.empty(tokens, plan, loaded.llama.n_vocab(), top_k, tail_samples)
                tally = score_chunks(
                    loaded, tokens, plan, label, ref.keep, progress=progress, cancel=cancel
                )
                ppl, err = tally.estimate()
                row.update(
                    reference=True, ppl=ppl, ppl_err=err, ln_ppl_ratio=0.0, ln_ppl_ratio_err=0.0,
                    kld=0.0, kld_err=0.0, kld_p99=0.0, same_top_pct=100.0, same_top_err=0.0,
                    rms_dp_pct=0.0, rms_dp_err=0.0,
                )  # fmt: skip
            else:
                _check_vocabulary(ref, loaded, tokens, label, models[first][0])
                divergence = _Divergence(ref)
                tally = score_chunks(
                    loaded, ref.tokens, ref.plan, label, divergence.score,
                    progress=progress, cancel=cancel,
                )  # fmt: skip
                row.update(reference=False, **divergence.row(tally.count))
            row.update(tokens_scored=tally.count, chunks=ref.plan.chunks)
        if speed:
            if cancel is not None and cancel.is_set():
                raise RunCancelledError("The run was cancelled")
            result = benchmark(path, n_threads=threads, **(speed_options or {}))
            mean = result.runs[SPEED_COLUMNS].mean()
            row.update({column: float(mean[column]) for column in SPEED_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS + (SPEED_COLUMNS if speed else []))


def _check_vocabulary(
    ref: _Reference, loaded: LoadedModel, tokens: list[int], label: str, ref_label: str
) -> None:
    if loaded.llama.n_vocab() != ref.n_vocab or tokens != ref.tokens:
        raise InvalidArgumentError(
            f"{label} has another vocabulary than the reference {ref_label} "
            f"({loaded.llama.n_vocab()} vs {ref.n_vocab} tokens"
            f"{'' if loaded.llama.n_vocab() != ref.n_vocab else ', other tokens for the text'})",
            hint="KL-divergence compares variants of one model: give a reference of the same model",
        )


def pareto_front(df: pd.DataFrame, x: str, *, larger_x_better: bool) -> pd.Series:
    """Rows no other row beats on both ``x`` and KLD (lower KLD is better)."""
    values = df[x].to_numpy(float) * (1 if larger_x_better else -1)
    kld = df["kld"].to_numpy(float)
    front = [
        not np.any((values >= v) & (kld <= k) & ((values > v) | (kld < k)))
        for v, k in zip(values, kld, strict=True)
    ]
    return pd.Series(front, index=df.index)


def plot_quality(df: pd.DataFrame) -> Figure:
    """KLD against generation tokens/s (when measured) and against file size; the Pareto front
    drawn and marked, points labelled by quant."""
    from matplotlib.figure import Figure

    panels = [("file_size_mb", "file size (MB)", False)]
    if "generation_tokens_per_sec" in df and df["generation_tokens_per_sec"].notna().any():
        panels.insert(0, ("generation_tokens_per_sec", "generation tokens / s", True))
    figure = Figure(figsize=(5.5 * len(panels), 4), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    for ax, (column, title, larger) in zip(axes, panels, strict=True):
        front = pareto_front(df, column, larger_x_better=larger)
        ax.scatter(df[column], df["kld"], color="#8c8c8c", label="variant")
        best = df[front].sort_values(column)
        ax.plot(best[column], best["kld"], "o-", color="#c44e52", label="Pareto front")
        for row in df.itertuples():
            ax.annotate(str(row.quant or row.model), (getattr(row, column), row.kld),
                        textcoords="offset points", xytext=(4, 4), fontsize="small")  # fmt: skip
        ax.set_xlabel(title)
        ax.set_ylabel("mean KLD vs reference")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return figure


def pick_quant(
    measured: str | pd.DataFrame,
    *,
    min_tokens_per_sec: float | None = None,
    max_kld: float | None = None,
    ram_gb: float | None = None,
    **options: Any,
) -> pd.Series:
    """The best-quality variant that fits in ``ram_gb`` and meets the speed and KLD asked.

    Args:
        measured: a :func:`quality` table, or a repo id to measure first (``options`` go to
            :func:`quality`).
        min_tokens_per_sec: the least generation tokens/s.
        max_kld: the most mean KLD against the reference.
        ram_gb: the most memory (measured, else the file size).

    Returns:
        The chosen row (lowest KLD, then smallest file).

    Raises:
        NotFoundError: no variant meets every condition.
    """
    df = measured if isinstance(measured, pd.DataFrame) else quality(measured, **options)
    keep = pd.Series(True, index=df.index)
    if min_tokens_per_sec is not None:
        if "generation_tokens_per_sec" not in df:
            raise InvalidArgumentError(
                "min_tokens_per_sec needs speed figures", hint="measure with speed=True"
            )
        keep &= df["generation_tokens_per_sec"] >= min_tokens_per_sec
    if max_kld is not None:
        keep &= df["kld"] <= max_kld
    if ram_gb is not None:
        memory = df["memory_used_mb"] if "memory_used_mb" in df else df["file_size_mb"]
        keep &= memory <= ram_gb * 1024
    fits = df[keep].sort_values(["kld", "file_size_mb"])
    if fits.empty:
        raise NotFoundError(
            "No variant meets every condition", hint="relax min_tokens_per_sec, max_kld or ram_gb"
        )
    return fits.iloc[0]


__all__ = [
    "QUALITY_COLUMNS",
    "check_quants",
    "pareto_front",
    "pick_quant",
    "plot_quality",
    "quality",
]
