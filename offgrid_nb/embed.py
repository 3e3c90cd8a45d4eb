"""Embeddings: one vector per text from a local model (llama.cpp's pooling).

An embedding model pools as its header says; a chat model embeds as the mean of its token
vectors (as Ollama and llama-server do). The model is loaded for embeddings, so switching
between chatting and embedding with the same model reloads it (one model per process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .engine import use_model
from .errors import InvalidArgumentError


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


def embed(
    model: str | os.PathLike[str],
    texts: str | Sequence[str],
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Embed ``texts`` with a local model.

    Args:
        model: a library name or a path.
        texts: one text or several.
        n_ctx: context window (default: the model's, capped by the settings); longer texts
            are truncated to it.
        n_threads: CPU threads (default: physical cores).
        normalize: scale each vector to unit length (what Ollama's ``/api/embed`` returns).

    Returns:
        A float32 array with one row per text.

    Raises:
        InvalidArgumentError: no text, or a text that is not a string.
    """
    return embed_counted(model, texts, n_ctx=n_ctx, n_threads=n_threads, normalize=normalize)[0]


def embed_counted(
    model: str | os.PathLike[str],
    texts: str | Sequence[str],
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    normalize: bool = True,
) -> tuple[np.ndarray, int]:
    """:func:`embed`, and how many tokens the texts were (what the APIs report as usage)."""
    items = check_texts(texts)
    with use_model(model, n_ctx=n_ctx, n_threads=n_threads, embedding=True) as loaded:
        vectors, count = loaded.llama.embed(
            items, normalize=normalize, truncate=True, return_count=True
        )
    return np.asarray(vectors, dtype=np.float32), int(count)
