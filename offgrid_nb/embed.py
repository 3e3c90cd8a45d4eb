"""Embeddings: one vector per text from a local model (llama.cpp's pooling).

An embedding model (its header sets a pooling type) is loaded for embeddings and pools as the
header says. A chat model embeds as the mean of its token vectors (as Ollama and llama-server
do) in its own generation context, through its scheduler (:mod:`offgrid_nb.batching`): chats
and embeddings with the same model share one load, as llama-server's ``--embeddings``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .batching import embed_with
from .engine import load_model, use_model
from .errors import InvalidArgumentError
from .gguf_info import local_header
from .library import resolve_model


def check_texts(texts: object) -> list[str]:
    """``texts`` as a non-empty list of strings (one string is a list of one).

    Raises:
        InvalidArgumentError: empty, or not text.
    """
    items = [texts] if isinstance(texts, str) else texts
    if (
        not isinstance(items, Sequence)
        or not items
        or not all(isinstance(t, str) and t for t in items)
    ):
        raise InvalidArgumentError(
            f"Invalid input: {texts!r}", hint="give a non-empty string or list of strings"
        )
    return list(items)


def _chat_model(path: Path) -> bool:
    """The header sets no pooling type: a generative model, not an embedding one (a file
    whose header cannot be read goes the embedding way, whose load says what is wrong)."""
    info = local_header(path)  # cached per file version: no header read per request
    return info is not None and info.pooling_type in (None, 0)


def embed(
    model: str | os.PathLike[str],
    texts: str | Sequence[str],
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    parallel: int | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Embed ``texts`` with a local model.

    Args:
        model: a library name or a path.
        texts: one text or several.
        n_ctx: context window (default: the model's, capped by the settings); longer texts
            are truncated to it.
        n_threads: CPU threads (default: physical cores).
        parallel: a chat model's slots, as :func:`offgrid_nb.engine.load_model` takes them
            (the same as its chats', so that they share the load).
        normalize: scale each vector to unit length (what Ollama's ``/api/embed`` returns).

    Returns:
        A float32 array with one row per text.

    Raises:
        InvalidArgumentError: no text, or a text that is not a string.
    """
    options = {"n_ctx": n_ctx, "n_threads": n_threads, "parallel": parallel}
    return embed_counted(model, texts, normalize=normalize, **options)[0]


def embed_counted(
    model: str | os.PathLike[str],
    texts: str | Sequence[str],
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    parallel: int | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, int]:
    """:func:`embed`, and how many tokens the texts were (what the APIs report as usage)."""
    items = check_texts(texts)
    path = resolve_model(model).resolve()
    if _chat_model(path):  # embedded in its generation context, loaded once for both
        loaded = load_model(path, n_ctx=n_ctx, n_threads=n_threads, parallel=parallel)
        return embed_with(loaded, items, normalize=normalize)
    with use_model(model, n_ctx=n_ctx, n_threads=n_threads, embedding=True) as loaded:
        vectors, count = loaded.llama.embed(
            items, normalize=normalize, truncate=True, return_count=True
        )
    return np.asarray(vectors, dtype=np.float32), int(count)
