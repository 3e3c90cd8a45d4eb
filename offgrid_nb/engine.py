"""Loading GGUF models into llama.cpp (llama-cpp-python, in-process), guarded.

- **Guard before load**: the header is read by :mod:`offgrid_nb.gguf_info` first, so a
  truncated, corrupt or non-GGUF file is a clear error instead of a crash of the process (or of
  the Jupyter kernel).
- **Memory check**: weights + KV cache + compute are estimated for the chosen context and the
  load is refused when they cannot fit in available RAM (unless ``force=True``).
- **One model per process** by default: asking for the loaded model again reuses it; asking
  for another frees the first.
- **Safe across threads**: a model is held through its :class:`ModelLock`: generation (the
  scheduler of :mod:`offgrid_nb.batching`, which decodes up to ``parallel`` replies together)
  and tokenizing share it (:func:`share_model`); benchmarks and frees hold it alone
  (:func:`use_model`), and one waiting for it stops new shared holders, so a benchmark waits
  for the replies in flight and then measures alone, and a model is never freed under a user.
- **Parallel slots**: with ``parallel`` > 1 the context holds that many sequences, each with
  its own ``n_ctx`` tokens of KV cache (a stream per sequence): memory grows with
  ``parallel`` and the memory check counts every slot.
"""

from __future__ import annotations

import os
import threading
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


class ModelLock:
    """Shared holds (generation, tokenizing) and exclusive ones (benchmarks, freeing the model).

    A thread waiting for an exclusive hold blocks new shared holds (it would starve otherwise);
    :attr:`exclusive_waiting` tells the scheduler to stop admitting replies and let go.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @property
    def exclusive_waiting(self) -> bool:
        """Someone waits to hold the model alone."""
        return self._waiting > 0

    def locked(self) -> bool:
        """The model is held (shared or alone)."""
        return self._exclusive or self._shared > 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the model with others (waits while it is held, or wanted, alone)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model alone (waits for every other holder to let go)."""
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()  # a scheduler waiting for work sees it
            try:
                self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


@dataclass
class LoadedModel:
    """The model llama.cpp holds, with the options it was loaded with."""

    path: Path
    llama: Any  # llama_cpp.Llama
    info: GGUFInfo
    n_ctx: int  # per slot: the tokens one conversation can hold
    n_threads: int
    n_gpu_layers: int
    embedding: bool = False  # loaded for embeddings (pooled vectors), not generation
    parallel: int = 1  # sequences the context holds (slots decoded together)
    requested: tuple[Any, ...] = ()  # the load_model() arguments that gave this model
    name: str = ""  # its file name without .gguf (links not followed), or its Ollama name
    closed: bool = False  # set, under ``lock`` held alone, when llama.cpp has freed it
    lock: ModelLock = field(default_factory=ModelLock)


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


def _check_memory(info: GGUFInfo, path: Path, n_ctx: int, parallel: int) -> None:
    estimate = estimate_memory(info, n_ctx=n_ctx, parallel=parallel)  # every slot's KV cache
    available = available_memory()
    if fit_verdict(estimate.total_bytes, available) != TOO_LARGE:
        return
    raise InsufficientMemoryError(
        f"{path.name} needs about {format_size(estimate.total_bytes)} at context {n_ctx} "
        f"x {parallel} slot(s) "
        f"but only {format_size(available)} of RAM is available",
        hint="try a smaller quantization (e.g. Q4_K_M or Q3_K_M), a smaller context (--ctx), "
        "fewer parallel slots, or force=True to load anyway",
    )


def loaded_model() -> LoadedModel | None:
    """The model currently loaded, if any."""
    return _current


def _close(loaded: LoadedModel) -> None:
    """Free a model once its current user is done with it (the caller holds ``_load_lock``)."""
    with loaded.lock.exclusive():
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
    with _hold(model, exclusive=True, **options) as loaded:
        yield loaded


@contextmanager
def share_model(model: str | Path, **options: Any) -> Iterator[LoadedModel]:
    """As :func:`use_model`, but shared: for what runs beside generation (tokenizing,
    rendering a template), never for decoding outside :mod:`offgrid_nb.batching`."""
    with _hold(model, exclusive=False, **options) as loaded:
        yield loaded


@contextmanager
def _hold(model: str | Path, *, exclusive: bool, **options: Any) -> Iterator[LoadedModel]:
    while True:
        loaded = load_model(model, **options)
        with loaded.lock.exclusive() if exclusive else loaded.lock.shared():
            if not loaded.closed:
                yield loaded
                return


def load_model(
    model: str | Path,
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    parallel: int | None = None,
    force: bool = False,
    embedding: bool = False,
) -> LoadedModel:
    """Load ``model`` (a library name or a path), or reuse it when it is already loaded.

    Args:
        model: a name as :func:`offgrid_nb.library.resolve_model` accepts, or a path.
        n_ctx: context window in tokens (default: the model's, capped by the settings).
        n_threads: CPU threads (default: physical cores).
        n_gpu_layers: layers to offload (default: all when the build has a GPU backend).
        parallel: sequences decoded together, each with ``n_ctx`` tokens (default: the
            ``parallel`` setting).
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
    requested = (path, n_ctx, n_threads, n_gpu_layers, embedding, parallel)
    current = _current
    if current is not None and current.requested == requested and not current.closed:
        return current  # the same call as last time: no header re-read
    info = inspect_file(path)
    n_ctx = context_size(info, n_ctx)
    n_threads = n_threads or default_threads()
    n_gpu_layers = gpu_layers() if n_gpu_layers is None else n_gpu_layers
    parallel = 1 if embedding else parallel or get_settings().parallel
    wanted = (path, n_ctx, n_threads, n_gpu_layers, embedding, parallel)
    with _load_lock:
        current = _current
        if current is not None:
            have = (current.path, current.n_ctx, current.n_threads, current.n_gpu_layers)
            if (*have, current.embedding, current.parallel) == wanted:
                return current
            _close(current)  # waits for a running generation or benchmark to finish
            _current = None
        if not force:
            _check_memory(info, path, n_ctx, parallel)
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
            if parallel > 1:
                _split_context(llama, n_ctx, parallel)
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
            path, llama, info, n_ctx, n_threads, n_gpu_layers, embedding, parallel, requested, name
        )
        return _current


def _split_context(llama: Any, n_ctx: int, parallel: int) -> None:
    """Give ``llama`` a context of ``parallel`` sequences of ``n_ctx`` tokens each.

    llama-cpp-python's ``Llama`` makes a one-sequence context; this one replaces it (sequence
    0 is still the high-level API's). Each sequence gets its own KV stream (``kv_unified``
    off, as llama-server ``-np N --no-kv-unified``): a slot's attention reads only its own
    cells, so a reply alone in its slot gives what llama-cpp-python gives whatever the other
    slots hold. With one unified buffer (llama-server's default, measured ~5% more tokens/s
    on gemma-3-270m) the masked cells of other slots changed a token of the real model.
    """
    lib = llama_cpp()
    params = type(llama.context_params).from_buffer_copy(llama.context_params)
    params.n_ctx = n_ctx * parallel
    params.n_seq_max = parallel
    params.kv_unified = False
    single = llama._ctx
    llama._ctx = lib._internals.LlamaContext(model=llama._model, params=params, verbose=False)
    llama.context_params = params
    single.close()
