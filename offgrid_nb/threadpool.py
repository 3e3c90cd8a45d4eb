"""A ggml threadpool attached to each llama.cpp context, as llama-bench and llama-server do.

Without one, ggml makes a throwaway pool for every graph it computes (every ``llama_decode``):
on builds without OpenMP (macOS, most non-GCC builds) that starts and joins ``n_threads``
threads per decoded token. A pool of our own keeps its threads between decodes; between graphs
they poll for work at the ``poll`` level (0: sleep at once, 100: poll hardest; llama.cpp's
default 50, ``OFFGRID_POLL``) before they sleep. OpenMP builds (GCC on Linux) run graphs on
OpenMP's own threads and use the pool for its per-thread state, priority and CPU mask only.

llama-cpp-python binds none of this: ``ggml_threadpool_new`` / ``ggml_threadpool_free`` are
found in the CPU backend through ggml's registry (as llama-bench finds them), and
``llama_attach_threadpool`` / ``llama_detach_threadpool`` in libllama, through ctypes. A pool
is freed with its context (:func:`attach` ties it to llama-cpp-python's context), and
:func:`live_pools` counts the pools not yet freed.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from .config import get_settings
from .errors import ModelLoadError
from .llama_backend import llama_cpp

GGML_MAX_N_THREADS = 512  # ggml.h
_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU (ggml-backend.h)


class ThreadpoolParams(ctypes.Structure):
    """``struct ggml_threadpool_params`` (ggml.h), field for field."""

    _fields_ = [
        ("cpumask", ctypes.c_bool * GGML_MAX_N_THREADS),  # all false: inherited affinity
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),  # enum ggml_sched_priority
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


_live: set[int] = set()  # addresses of the pools made and not yet freed
_lock = threading.Lock()


@functools.cache
def _api() -> SimpleNamespace:
    """The C functions, with their prototypes (looked up once)."""
    module = llama_cpp()  # loads libllama and its backends first
    from llama_cpp import _ggml

    ggml, llama = _ggml.libggml, module.llama_cpp._lib
    pointer = ctypes.c_void_p
    for lib, name, argtypes, restype in (
        (ggml, "ggml_backend_dev_by_type", [ctypes.c_int], pointer),
        (ggml, "ggml_backend_dev_backend_reg", [pointer], pointer),
        (ggml, "ggml_backend_reg_get_proc_address", [pointer, ctypes.c_char_p], pointer),
        (ggml, "ggml_threadpool_params_init", [ctypes.POINTER(ThreadpoolParams), ctypes.c_int],
         None),
        (llama, "llama_attach_threadpool", [pointer, pointer, pointer], None),
        (llama, "llama_detach_threadpool", [pointer], None),
    ):  # fmt: skip
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    registry = ggml.ggml_backend_dev_backend_reg(ggml.ggml_backend_dev_by_type(_CPU_DEVICE))

    def cpu_function(name: str, prototype: Any) -> Any:
        address = ggml.ggml_backend_reg_get_proc_address(registry, name.encode())
        if not address:
            raise ModelLoadError(
                f"this llama.cpp build's CPU backend has no {name}",
                hint="reinstall llama-cpp-python (0.3.16 or later)",
            )
        return prototype(address)

    return SimpleNamespace(
        params_init=ggml.ggml_threadpool_params_init,
        new=cpu_function(
            "ggml_threadpool_new", ctypes.CFUNCTYPE(pointer, ctypes.POINTER(ThreadpoolParams))
        ),
        free=cpu_function("ggml_threadpool_free", ctypes.CFUNCTYPE(None, pointer)),
        attach=llama.llama_attach_threadpool,
        detach=llama.llama_detach_threadpool,
    )


def attach_pool(
    ctx: ctypes.c_void_p, n_threads: int, poll: int | None = None
) -> Callable[[], None]:
    """Make a pool of ``n_threads`` and attach it to the llama.cpp context ``ctx``, for single
    decodes and batches alike.

    Args:
        ctx: the context (``llama_context *``, as llama-cpp-python's bindings return it).
        n_threads: the pool's threads: at least the context's ``n_threads`` and
            ``n_threads_batch`` (ggml gives each thread of a graph a slot of the pool).
        poll: polling level, 0-100 (default: the ``poll`` setting, ``OFFGRID_POLL``).

    Returns:
        The release: detaches the pool and frees it (call it before the context is freed;
        a second call does nothing).

    Raises:
        ModelLoadError: ggml could not make the pool.
    """
    api = _api()
    params = ThreadpoolParams()
    api.params_init(ctypes.byref(params), n_threads)
    params.poll = get_settings().poll if poll is None else poll
    pool = api.new(ctypes.byref(params))
    if not pool:
        raise ModelLoadError(f"ggml could not make a threadpool of {n_threads} threads")
    with _lock:
        _live.add(pool)
    api.attach(ctx, pool, None)  # NULL: batches use the same pool

    def release() -> None:
        with _lock:
            if pool not in _live:
                return
            _live.discard(pool)
        api.detach(ctx)
        api.free(pool)

    return release


def attach(llama: Any, n_threads: int) -> None:
    """Attach a pool to a ``llama_cpp.Llama``'s context, freed just before that context is
    (however it is closed: ``Llama.close()``, its model's close, garbage collection)."""
    context = llama._ctx  # llama_cpp._internals.LlamaContext
    release = attach_pool(context.ctx, n_threads)
    context._exit_stack.callback(release)  # last in, first out: before llama_free


def live_pools() -> int:
    """Pools made by :func:`attach_pool` and not yet freed."""
    with _lock:
        return len(_live)
