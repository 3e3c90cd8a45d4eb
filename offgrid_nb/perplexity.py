"""Perplexity computed exactly as llama.cpp's ``llama-perplexity`` computes it.

As ``tools/perplexity/perplexity.cpp`` (``perplexity()``) does: the text is tokenized once
with BOS (special tokens not parsed); it is cut into whole chunks of ``n_ctx`` tokens (a
partial last chunk is dropped); for each chunk the KV cache is cleared, its first token is
replaced by BOS (when the vocabulary adds one), the chunk is decoded in batches, and only the
positions ``n_ctx/2 .. n_ctx-2`` are scored (each predicts the next token, so a chunk scores
``n_ctx - 1 - n_ctx/2`` tokens). PPL = exp(mean NLL); its +/- is ``PPL * sqrt(var(NLL) /
(count - 1))``, as ``Final estimate: PPL = x +/- y`` prints it.

Differences, none of which changes a scored logit: one chunk per decode (llama-perplexity packs
``n_batch / n_ctx`` chunks into one decode as parallel sequences), and a text of one whole
chunk is accepted (llama-perplexity asks for two). Logits are read once per decode through a
numpy view of llama.cpp's buffer, in blocks of rows: no row is kept after it is scored.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from .corpus import resolve_text
from .engine import LoadedModel, default_threads, use_model
from .errors import GenerationError, InvalidArgumentError, RunCancelledError
from .library import model_label, resolve_model
from .llama_backend import llama_cpp

MIN_CTX = 16
ROWS = 16  # logit rows scored at once: bounds the float32 temporaries to ROWS x n_vocab


@dataclass(frozen=True)
class ChunkProgress:
    """Where a run is: ``done`` of ``total`` chunks, the running PPL, the model measured."""

    model: str
    done: int
    total: int
    ppl: float


ProgressCallback = Callable[[ChunkProgress], None]


@dataclass
class PerplexityResult:
    """Perplexity of one model on one text.

    ``per_chunk`` has one row per chunk: ``chunk`` (1-based), ``nll`` (the chunk's mean) and
    ``ppl`` (the running estimate llama-perplexity prints as ``[i]x``).
    """

    model: str
    path: Path
    n_ctx: int
    ppl: float
    ppl_err: float
    tokens_scored: int
    chunks: int
    tokens_total: int
    source: str
    seconds: float
    per_chunk: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (``per_chunk`` as a list of rows)."""
        return {
            "model": self.model,
            "path": str(self.path),
            "n_ctx": self.n_ctx,
            "ppl": self.ppl,
            "ppl_err": self.ppl_err,
            "tokens_scored": self.tokens_scored,
            "chunks": self.chunks,
            "tokens_total": self.tokens_total,
            "source": self.source,
            "seconds": self.seconds,
            "per_chunk": self.per_chunk.to_dict(orient="records"),
        }

    def report(self) -> str:
        """The lines llama-perplexity prints: ``[1]x,[2]y,...`` then ``Final estimate``."""
        steps = ",".join(f"[{row.chunk}]{row.ppl:.4f}" for row in self.per_chunk.itertuples())
        return f"{steps},\nFinal estimate: PPL = {self.ppl:.4f} +/- {self.ppl_err:.5f}"


def mean_and_error(
    total: float, total2: float, count: int, *, min_count: int = 1
) -> tuple[float, float]:
    """Mean and its standard error from a sum and a sum of squares: the error is 0 unless
    ``count > min_count`` (perplexity.cpp's ``mean_and_uncertainty`` uses 10, its final PPL
    estimate 1)."""
    if count < 1:
        return 0.0, 0.0
    mean = total / count
    var = total2 / count - mean * mean
    ok = var > 0 and count > max(min_count, 1)
    return mean, float(np.sqrt(var / (count - 1))) if ok else 0.0


def log_softmax_rows(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(max, log-sum-exp)`` per row, as perplexity.cpp's ``log_softmax``: a row's log-prob
    of token ``t`` is ``logits[t] - max - lse``. Float32 maths as there; the sum is numpy's
    pairwise float32 one (within 2e-7 of perplexity.cpp's float64 sum on a 262k vocabulary, at
    40% of its cost).

    The rows are shared among :func:`_row_threads` (numpy frees the GIL for its loops), as
    llama-perplexity's ``process_logits`` shares them among its threads (on one core, a
    262k-vocabulary chunk of 512 takes ~0.2 s to score beside ~3 s to decode on two).
    """
    cores = _cores()
    if len(logits) < 2 or cores < 2:
        return _log_softmax(logits)
    step = -(-len(logits) // cores)
    blocks = [logits[start : start + step] for start in range(0, len(logits), step)]
    done = list(_row_threads().map(_log_softmax, blocks))
    return np.concatenate([top for top, _ in done]), np.concatenate([lse for _, lse in done])


@functools.cache
def _cores() -> int:
    """Physical cores, read once (psutil reads /sys each time: ~90 us, every block of rows)."""
    return psutil.cpu_count(logical=False) or 1


_pool: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def _row_threads() -> ThreadPoolExecutor:
    """One pool for the process, a thread per physical core: made once, so a server that
    scores for weeks holds the same few threads."""
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(_cores(), "offgrid-rows"))
        return _pool[0]


def _log_softmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = logits.max(axis=1)
    shifted = logits - top[:, None]
    np.exp(shifted, out=shifted)
    lse = np.log(shifted.sum(axis=1).astype(np.float64))
    return top.astype(np.float64), lse


@dataclass(frozen=True)
class Chunking:
    """How a token list is cut: ``chunks`` of ``n_ctx``, decoded ``n_batch`` at a time."""

    n_ctx: int
    n_batch: int
    chunks: int

    @property
    def first(self) -> int:
        """The first scored position of a chunk."""
        return self.n_ctx // 2

    @property
    def scored_per_chunk(self) -> int:
        """Tokens a chunk scores (llama-perplexity's ``n_ctx - 1 - n_ctx/2``)."""
        return self.n_ctx - 1 - self.first


def check_options(n_ctx: int, chunks: int | None = None, batch_size: int | None = None) -> None:
    """Chunking options checked before any model is loaded.

    Raises:
        InvalidArgumentError: ``n_ctx`` not a whole number >= 16, ``chunks`` or ``batch_size``
            not a whole number >= 1.
    """
    if _not_count(n_ctx, MIN_CTX):
        raise InvalidArgumentError(
            f"Invalid n_ctx: {n_ctx!r} (perplexity needs at least {MIN_CTX})",
            hint="llama-perplexity's default is 512",
        )
    for name, value in (("chunks", chunks), ("batch_size", batch_size)):
        if value is not None and _not_count(value, 1):
            raise InvalidArgumentError(f"Invalid {name}: {value!r} (must be >= 1)")


def _not_count(value: object, low: int) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value < low


def chunking(n_tokens: int, n_ctx: int, batch_size: int | None, chunks: int | None) -> Chunking:
    """The chunks of a tokenized text, checked.

    Raises:
        InvalidArgumentError: ``n_ctx`` < 16, a bad batch or chunk count, or fewer than
            ``n_ctx`` tokens.
    """
    check_options(n_ctx, chunks, batch_size)
    n_batch = min(batch_size or 512, n_ctx)
    available = n_tokens // n_ctx
    if available < 1:
        raise InvalidArgumentError(
            f"The text has {n_tokens} tokens, fewer than one chunk of n_ctx={n_ctx}",
            hint=f"give a longer text (at least {n_ctx} tokens) or a smaller n_ctx",
        )
    return Chunking(n_ctx, n_batch, available if chunks is None else min(chunks, available))


def tokenize(loaded: LoadedModel, text: str) -> list[int]:
    """The text's tokens as llama-perplexity takes them: with BOS, special tokens not parsed."""
    return loaded.tokenize(text, add_bos=True, special=False)


def scored_logits(
    loaded: LoadedModel,
    tokens: list[int],
    plan: Chunking,
    cancel: threading.Event | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Decode every chunk; yield ``(chunk, logits, targets)`` blocks of at most :data:`ROWS`
    scored rows: ``logits`` a read-only float32 view of llama.cpp's buffer (valid until the
    next item), ``targets`` the tokens they predict.

    Raises:
        RunCancelledError: ``cancel`` was set (checked between decodes).
        GenerationError: llama.cpp failed to decode.
    """
    lib = llama_cpp()
    llama = loaded.llama
    n_vocab = llama.n_vocab()
    vocab = llama._model.vocab
    bos = lib.llama_vocab_bos(vocab) if lib.llama_vocab_get_add_bos(vocab) else None
    ids = np.asarray(tokens, dtype=np.int32)
    batch = lib.llama_batch_init(plan.n_batch, 0, 1)
    try:
        for chunk in range(plan.chunks):
            start = chunk * plan.n_ctx
            llama.reset()
            llama._ctx.kv_cache_clear()
            for offset in range(0, plan.n_ctx, plan.n_batch):
                if cancel is not None and cancel.is_set():
                    raise RunCancelledError("The run was cancelled")
                size = min(plan.n_batch, plan.n_ctx - offset)
                outputs = _fill(batch, ids, start, offset, size, plan.first, bos)
                if lib.llama_decode(llama.ctx, batch) != 0:
                    raise GenerationError(f"llama.cpp failed to decode chunk {chunk + 1}")
                if not outputs:
                    continue
                pointer = lib.llama_get_logits(llama.ctx)
                rows = np.ctypeslib.as_array(pointer, shape=(outputs * n_vocab,))
                rows = rows.reshape(outputs, n_vocab)
                first_pos = max(offset, plan.first)
                for row in range(0, outputs, ROWS):
                    pos = first_pos + row
                    block = rows[row : row + ROWS]
                    # the last position predicts nothing in the chunk: not scored
                    last = min(pos + len(block), plan.n_ctx - 1)
                    if last <= pos:
                        break
                    yield chunk, block[: last - pos], ids[start + pos + 1 : start + last + 1]
    finally:
        lib.llama_batch_free(batch)


def _fill(
    batch: Any, ids: np.ndarray, start: int, offset: int, size: int, first: int, bos: int | None
) -> int:
    """Put ``size`` tokens of a chunk in ``batch`` (sequence 0); outputs from ``first`` on."""
    outputs = 0
    for k in range(size):
        pos = offset + k
        token = bos if pos == 0 and bos is not None else int(ids[start + pos])
        batch.token[k] = token
        batch.pos[k] = pos
        batch.n_seq_id[k] = 1
        batch.seq_id[k][0] = 0
        # llama-perplexity asks logits for pos >= first (the last one goes unused)
        need = pos >= first
        batch.logits[k] = need
        outputs += need
    batch.n_tokens = size
    return outputs


def nll_of(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each row's target token (float64)."""
    top, lse = log_softmax_rows(logits)
    return top + lse - logits[np.arange(len(targets)), targets]


class Tally:
    """Running sums of NLL per chunk, as llama-perplexity keeps them."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.nll2 = 0.0
        self.count = 0
        self.rows: list[dict[str, float]] = []
        self._chunk_nll = 0.0
        self._chunk_count = 0

    def add(self, values: np.ndarray) -> None:
        self.nll += float(values.sum())
        self.nll2 += float((values * values).sum())
        self.count += len(values)
        self._chunk_nll += float(values.sum())
        self._chunk_count += len(values)

    def end_chunk(self) -> float:
        """Close a chunk; returns the running PPL."""
        ppl = float(np.exp(self.nll / self.count))
        chunk_nll = self._chunk_nll / max(self._chunk_count, 1)
        self.rows.append({"chunk": len(self.rows) + 1, "nll": chunk_nll, "ppl": ppl})
        self._chunk_nll, self._chunk_count = 0.0, 0
        return ppl

    def estimate(self) -> tuple[float, float]:
        """``(PPL, its +/-)`` as the ``Final estimate`` line."""
        mean, err = mean_and_error(self.nll, self.nll2, self.count)
        ppl = float(np.exp(mean))
        return ppl, ppl * err

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["chunk", "nll", "ppl"])


def chunked(
    items: Iterator[tuple[int, np.ndarray, np.ndarray]],
    on_chunk: Callable[[int], None],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(logits, targets)`` of ``items``, calling ``on_chunk(chunk)`` after each chunk."""
    current = None
    for chunk, logits, targets in items:
        if current is not None and chunk != current:
            on_chunk(current)
        current = chunk
        yield logits, targets
    if current is not None:
        on_chunk(current)


Scorer = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def score_chunks(
    loaded: LoadedModel,
    tokens: list[int],
    plan: Chunking,
    label: str,
    score: Scorer,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Tally:
    """Run every chunk; ``score(logits, targets, index)`` returns the rows' NLL (``index``:
    the first row's number among all scored tokens)."""
    tally = Tally()

    def on_chunk(chunk: int) -> None:
        ppl = tally.end_chunk()
        if progress is not None:
            progress(ChunkProgress(label, chunk + 1, plan.chunks, ppl))

    for logits, targets in chunked(scored_logits(loaded, tokens, plan, cancel), on_chunk):
        tally.add(score(logits, targets, tally.count))
    return tally


def perplexity(
    model: str | os.PathLike[str],
    text: str | os.PathLike[str] | None = None,
    *,
    dataset: str | None = None,
    n_ctx: int = 512,
    batch_size: int | None = None,
    chunks: int | None = None,
    n_threads: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> PerplexityResult:
    """Perplexity of a local model, as ``llama-perplexity -m MODEL -f TEXT -c N_CTX``.

    Args:
        model: a library name or a path.
        text: the text, or a path to a text file (default: :func:`offgrid_nb.corpus.sample_text`).
        dataset: instead of ``text``, a known Hub dataset (``"wikitext-2"``).
        n_ctx: tokens per chunk (llama-perplexity's ``-c``), at least 16.
        batch_size: tokens per decode (default and most: ``min(512, n_ctx)``).
        chunks: score at most this many chunks (``--chunks``; default: all).
        n_threads: CPU threads (default: physical cores).
        progress: called with a :class:`ChunkProgress` after each chunk.
        cancel: set it to stop between decodes.

    Returns:
        A :class:`PerplexityResult` (``.ppl``, ``.ppl_err``, ``.per_chunk``, ``.report()``).

    Raises:
        InvalidArgumentError: ``n_ctx`` < 16, or a text shorter than one chunk.
        NotFoundError: no such model, text file or dataset.
        RunCancelledError: ``cancel`` was set.
    """
    check_options(n_ctx, chunks, batch_size)
    content, source = resolve_text(text, dataset)
    found = resolve_model(model)
    path = found.resolve()
    label = model_label(model, found)
    started = time.perf_counter()
    threads = n_threads or default_threads()
    with use_model(path, n_ctx=n_ctx, n_threads=threads, parallel=1) as loaded:
        tokens = tokenize(loaded, content)
        plan = chunking(len(tokens), n_ctx, batch_for(loaded, batch_size), chunks)
        tally = score_chunks(
            loaded, tokens, plan, label, lambda logits, targets, _: nll_of(logits, targets),
            progress=progress, cancel=cancel,
        )  # fmt: skip
    ppl, err = tally.estimate()
    return PerplexityResult(
        label, path, n_ctx, ppl, err, tally.count, plan.chunks, len(tokens), source,
        time.perf_counter() - started, tally.frame(),
    )  # fmt: skip


def batch_for(loaded: LoadedModel, batch_size: int | None) -> int:
    """Tokens per decode: as asked, at most the context's ``n_batch``."""
    check_options(MIN_CTX, batch_size=batch_size)
    return min(batch_size or loaded.llama.n_batch, loaded.llama.n_batch)


__all__ = ["ChunkProgress", "PerplexityResult", "check_options", "perplexity"]
