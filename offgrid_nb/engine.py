"""Loading GGUF models into llama.cpp (llama-cpp-python, in-process), guarded.

- **Guard before load**: the header is read by :mod:`offgrid_nb.gguf_info` first, so a
  truncated, corrupt or non-GGUF file is a clear error instead of a crash of the process (or of
  the Jupyter kernel).
- **Memory check**: weights + KV cache + compute are estimated for the chosen context and the
  load is refused when they cannot fit in available RAM (unless ``force=True``).
- **One model per process** by default: asking for the loaded model again reuses it; asking
  for another frees the first.
- **Safe across threads**: use a model through :func:`use_model`, which holds its lock; a model
  is only ever freed under that lock, so a chat in one thread and a benchmark (or another
  model's load) in another wait for each other instead of crashing llama.cpp.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .config import get_settings
from .errors import InsufficientMemoryError, ModelLoadError
from .fit import TOO_LARGE, available_memory, estimate_memory, fit_verdict
from .gguf_info import GGUFInfo, inspect_file
from .library import model_label, resolve_model
from .llama_backend import clear_log, llama_cpp, recent_log
from .sizes import format_size


@dataclass
class LoadedModel:
    """The model llama.cpp holds, with the options it was loaded with."""

    path: Path
    llama: Any  # llama_cpp.Llama
    info: GGUFInfo
    n_ctx: int
    n_threads: int
    n_gpu_layers: int
    embedding: bool = False  # loaded for embeddings (pooled vectors), not generation
    requested: tuple[Any, ...] = ()  # the load_model() arguments that gave this model
    name: str = ""  # its file name without .gguf (links not followed), or its Ollama name
    closed: bool = False  # set, under ``lock``, when llama.cpp has freed it
    lock: threading.Lock = field(default_factory=threading.Lock)  # one user at a time
    last_used: float = field(default_factory=time.monotonic)  # when its last user let go


_current: LoadedModel | None = None
_load_lock = threading.Lock()


def default_threads() -> int:
    """Physical cores (llama.cpp gains nothing from hyper-threads), at least 1."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def gpu_layers() -> int:
    """All layers (-1) when this llama.cpp build can offload to a GPU, else 0."""
    return -1 if llama_cpp().llama_supports_gpu_offload() else 0


def context_size(info: GGUFInfo, n_ctx: int | None) -> int:
    """The context to allocate: as asked, else the model's own, capped by the settings."""
    if n_ctx is not None:
        return n_ctx
    cap = get_settings().max_ctx
    return min(info.context_length or cap, cap)


def _pooling(info: GGUFInfo) -> int:
    """The model's own pooling type, else mean pooling (a chat model embeds as the mean of
    its token vectors, as Ollama and llama-server do)."""
    mean = llama_cpp().LLAMA_POOLING_TYPE_MEAN
    return info.pooling_type if info.pooling_type not in (None, 0) else mean


def _check_memory(info: GGUFInfo, path: Path, n_ctx: int) -> None:
    estimate = estimate_memory(info, n_ctx=n_ctx)
    available = available_memory()
    if fit_verdict(estimate.total_bytes, available) != TOO_LARGE:
        return
    raise InsufficientMemoryError(
        f"{path.name} needs about {format_size(estimate.total_bytes)} at context {n_ctx} "
        f"but only {format_size(available)} of RAM is available",
        hint="try a smaller quantization (e.g. Q4_K_M or Q3_K_M), a smaller context (--ctx), "
        "or force=True to load anyway",
    )


def loaded_model() -> LoadedModel | None:
    """The model currently loaded, if any."""
    return _current


def _close(loaded: LoadedModel) -> None:
    """Free a model once its current user is done with it (the caller holds ``_load_lock``)."""
    with loaded.lock:
        loaded.llama.close()
        loaded.closed = True


def unload_model() -> None:
    """Free the loaded model (no-op when none is loaded); waits for its current user."""
    global _current
    with _load_lock:
        if _current is not None:
            _close(_current)
            _current = None


@contextmanager
def use_model(model: str | Path, **options: Any) -> Iterator[LoadedModel]:
    """Load (or reuse) ``model`` and hold it for exclusive use in a ``with`` block.

    Takes the options of :func:`load_model`. If another thread swapped the model out between
    the load and the lock, it is loaded again. Do not load models inside the block.
    """
    while True:
        loaded = load_model(model, **options)
        with loaded.lock:
            if not loaded.closed:
                try:
                    yield loaded
                finally:
                    loaded.last_used = time.monotonic()
                return


def load_model(
    model: str | Path,
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    force: bool = False,
    embedding: bool = False,
) -> LoadedModel:
    """Load ``model`` (a library name or a path), or reuse it when it is already loaded.

    Args:
        model: a name as :func:`offgrid_nb.library.resolve_model` accepts, or a path.
        n_ctx: context window in tokens (default: the model's, capped by the settings).
        n_threads: CPU threads (default: physical cores).
        n_gpu_layers: layers to offload (default: all when the build has a GPU backend).
        force: load even when the memory estimate says it will not fit.
        embedding: load for embeddings: pooled by the model's own pooling type, else mean.

    Returns:
        The :class:`LoadedModel`.

    Raises:
        NotFoundError, AmbiguousError: the name resolves to no model or to several.
        InvalidModelError: the file is not a valid GGUF (checked before llama.cpp sees it).
        InsufficientMemoryError: it would not fit in available RAM.
        ModelLoadError: llama.cpp refused it; the message quotes llama.cpp's reason.
    """
    global _current
    found = resolve_model(model)
    path = found.resolve()  # one model however it is named (HF cache files are links)
    requested = (path, n_ctx, n_threads, n_gpu_layers, embedding)
    current = _current
    if current is not None and current.requested == requested and not current.closed:
        return current  # the same call as last time: no header re-read
    info = inspect_file(path)
    n_ctx = context_size(info, n_ctx)
    n_threads = n_threads or default_threads()
    n_gpu_layers = gpu_layers() if n_gpu_layers is None else n_gpu_layers
    wanted = (path, n_ctx, n_threads, n_gpu_layers, embedding)
    with _load_lock:
        current = _current
        if current is not None:
            held = (current.path, current.n_ctx, current.n_threads, current.n_gpu_layers)
            if (*held, current.embedding) == wanted:
                return current
            _close(current)  # waits for a running generation or benchmark to finish
            _current = None
        if not force:
            _check_memory(info, path, n_ctx)
        clear_log()
        try:
            llama = llama_cpp().Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,  # llama-cpp-python would use every logical core
                n_gpu_layers=n_gpu_layers,
                embedding=embedding,
                pooling_type=_pooling(info) if embedding else -1,  # -1: unspecified
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            reason = next(
                (line for line in reversed(recent_log()) if "error" in line.lower()), str(exc)
            )
            raise ModelLoadError(
                f"llama.cpp could not load {path.name}: {reason.strip()}",
                hint="the file may be damaged (offgrid verify NAME) or use an architecture "
                "this llama.cpp build does not support",
            ) from exc
        name = model_label(model, found)
        _current = LoadedModel(
            path, llama, info, n_ctx, n_threads, n_gpu_layers, embedding, requested, name
        )
        return _current
