"""Loading GGUF models into llama.cpp (llama-cpp-python, in-process), guarded.

- **Guard before load**: the header is read by :mod:`offgrid_nb.gguf_info` first, so a
  truncated, corrupt or non-GGUF file is a clear error instead of a crash of the process (or of
  the Jupyter kernel).
- **Memory check**: weights + KV cache + compute are estimated for the chosen context and the
  load is refused when they cannot fit in available RAM (unless ``force=True``).
- **Offload as the fit says**: ``n_gpu_layers="auto"`` loads with the layer count
  :func:`offgrid_nb.fit.plan_offload` packs into the GPUs of this build (0 on a CPU-only
  build); a load that fails for memory with layers offloaded is retried once with half of
  them, and :attr:`LoadedModel.offload_notice` says so.
- **Several models loaded**, up to the ``max_loaded_models`` setting (3, as Ollama's
  ``OLLAMA_MAX_LOADED_MODELS``) and as many as fit: asking for a loaded model again reuses it;
  asking for another loads it beside, freeing the least recently used first when the count is
  reached or the new one does not fit in the RAM the others leave (their weights are counted
  as used: mapped files look free to the OS). The same file with other options replaces its
  earlier load.
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

import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from . import threadpool
from .config import get_settings
from .devices import Device, gpus, list_devices
from .errors import (
    InsufficientMemoryError,
    InvalidArgumentError,
    ModelLoadError,
    UnsupportedModelError,
)
from .fit import TOO_LARGE, OffloadPlan, available_memory, estimate_memory, plan_offload
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
    devices: tuple[str, ...] = ("CPU",)  # where its layers are: the GPUs given some, the CPU
    backend: str = "CPU"  # the backends of those devices ("CUDA", "Metal", "CUDA+CPU"...)
    offload_notice: str | None = None  # set when a load had to be retried with fewer layers
    used: float = field(default_factory=time.monotonic)  # last asked for (LRU order)

    def again(self) -> LoadedModel:
        """This model if it is still loaded, else the same :func:`load_model` call again."""
        if not self.closed:
            self.used = time.monotonic()
            return self
        return load_model(self.path, **dict(zip(_OPTIONS, self.requested[1:], strict=True)))

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """``text``'s tokens, as ``Llama.tokenize`` gives them.

        Raises:
            InvalidArgumentError: non-ASCII text for a vocabulary without byte tokens for
                it (llama.cpp would abort the whole process on it).
        """
        data = text.encode("utf-8")
        if not data.isascii() and _lacks_high_bytes(self.llama._model.vocab):
            raise InvalidArgumentError(
                f"{self.name} has no tokens for non-ASCII text (its vocabulary's byte tokens "
                "stop at 0x7F)",
                hint="give it ASCII text (a generated test model), or use a real model",
            )
        return _tokenize(self.llama._model.vocab, data, add_bos, special)

    def ram_weights(self) -> int:
        """Bytes of weights this model keeps in RAM (its file, less what went to GPUs)."""
        size = self.path.stat().st_size
        layers = self.info.n_layers or 0
        if self.n_gpu_layers == 0 or not layers:
            return size
        on_gpu = layers if self.n_gpu_layers < 0 else min(self.n_gpu_layers, layers)
        return size * (layers - on_gpu) // layers


def _tokenize(vocab: Any, data: bytes, add_bos: bool, special: bool) -> list[int]:
    """llama.cpp's tokens of ``data``, in one pass: the buffer holds a token per byte (+ BOS
    and EOS), as llama.cpp's ``common_tokenize`` sizes it. Not ``Llama.tokenize``: it sizes the
    buffer by the training context, so a text longer than that (a perplexity corpus) is
    tokenized twice (2 s more for 465 kB on gemma-3's vocabulary)."""
    lib = llama_cpp()
    size = len(data) + 2
    while True:
        buffer = (lib.llama_token * size)()
        n = lib.llama_tokenize(vocab, data, len(data), buffer, size, add_bos, special)
        if n >= 0:
            return buffer[:n]
        size = -n  # llama.cpp says how many it needs (common_tokenize retries too)


def _lacks_high_bytes(vocab: Any) -> bool:
    """A SentencePiece vocabulary whose byte tokens (``<0x00>``...) stop short of ``<0xFF>``,
    as our generated models' do: llama.cpp's byte fallback then throws an uncaught C++
    exception on any non-ASCII byte. Real models list all 256, together, among the first
    ids (gemma-3: 238-493); none found there: nothing to refuse."""
    lib = llama_cpp()
    if lib.llama_vocab_type(vocab) != lib.LLAMA_VOCAB_TYPE_SPM:
        return False
    n_tokens = lib.llama_vocab_n_tokens(vocab)
    for token in range(min(n_tokens, 1024)):
        if lib.llama_vocab_get_text(vocab, token) == b"<0x00>":
            last = token + 255
            return last >= n_tokens or lib.llama_vocab_get_text(vocab, last) != b"<0xFF>"
    return False


# load_model's options, in the order of LoadedModel.requested (after the path)
_OPTIONS = ("n_ctx", "n_threads", "n_gpu_layers", "embedding", "parallel")
_loaded: list[LoadedModel] = []  # what llama.cpp holds now, oldest load first
_load_lock = threading.Lock()


def default_threads() -> int:
    """The ``threads`` setting, else the physical cores (llama.cpp gains nothing from
    hyper-threads), at least 1."""
    return get_settings().threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1


_log = logging.getLogger(__name__)
# what llama.cpp's backends log when a buffer does not fit (CUDA, Metal, Vulkan, ROCm)
_OUT_OF_MEMORY = re.compile(
    r"out of memory|failed to allocate|unable to allocate|OutOfDeviceMemory", re.IGNORECASE
)
_LOAD_ERRORS = (ValueError, RuntimeError, OSError)


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


def _plan(
    info: GGUFInfo,
    path: Path,
    n_ctx: int,
    parallel: int,
    devices: list[Device],
    force: bool,
    reserved: int = 0,
) -> OffloadPlan:
    """Where the layers go (:func:`offgrid_nb.fit.plan_offload`) in the RAM available less
    ``reserved`` (the weights of the models kept loaded); refused when what stays in RAM does
    not fit, unless ``force`` (which also loads a model the estimate cannot describe, on the
    CPU)."""
    try:
        estimate = estimate_memory(info, n_ctx=n_ctx, parallel=parallel)  # every slot's KV
    except UnsupportedModelError:
        if not force:
            raise
        return OffloadPlan(n_layers=info.n_layers or 0, gpu_layers=0)
    available = max(available_memory() - reserved, 0)
    plan = plan_offload(info, estimate, devices, ram_bytes=available)
    if force or plan.verdict != TOO_LARGE:
        return plan
    raise InsufficientMemoryError(
        f"{path.name} needs about {format_size(plan.ram_bytes)} of RAM at context {n_ctx} "
        f"x {parallel} slot(s) "
        f"but only {format_size(available)} of RAM is available",
        hint="try a smaller quantization (e.g. Q4_K_M or Q3_K_M), a smaller context (--ctx), "
        "fewer parallel slots, or force=True to load anyway",
    )


def loaded_models() -> list[LoadedModel]:
    """The models loaded now, the most recently used first."""
    return sorted(_loaded, key=lambda loaded: loaded.used, reverse=True)


def loaded_model() -> LoadedModel | None:
    """The most recently used of the loaded models, if any."""
    models = loaded_models()
    return models[0] if models else None


def _close(loaded: LoadedModel) -> None:
    """Free a model once its current users are done with it (the caller holds ``_load_lock``)."""
    with loaded.lock.exclusive():
        loaded.llama.close()
        loaded.closed = True
    _loaded.remove(loaded)


def unload_model(model: str | Path | None = None) -> None:
    """Free ``model`` (a library name or a path) if it is loaded, else every loaded model;
    waits for their current users."""
    path = None if model is None else resolve_model(model).resolve()
    with _load_lock:
        for loaded in list(_loaded):
            if path is None or loaded.path == path:
                _close(loaded)


def _make_room(path: Path, info: GGUFInfo, options: tuple[Any, ...], force: bool) -> int:
    """Free what a new load of ``path`` replaces, then the least recently used models until
    the count allows one more and the new one fits beside the rest (the caller holds
    ``_load_lock``). Returns the bytes of weights the models kept hold in RAM."""
    for loaded in [m for m in _loaded if m.path == path]:
        _close(loaded)  # the same file with other options
    n_ctx, parallel, devices = options
    while _loaded:
        reserved = sum(loaded.ram_weights() for loaded in _loaded)
        if len(_loaded) < max(get_settings().max_loaded_models, 1):
            try:
                _plan(info, path, n_ctx, parallel, devices, force, reserved)
                return reserved
            except InsufficientMemoryError:
                pass  # fits alone, perhaps: free the least recently used and look again
        _close(min(_loaded, key=lambda loaded: loaded.used))
    return 0


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
    n_gpu_layers: int | str | None = "auto",
    parallel: int | None = None,
    force: bool = False,
    embedding: bool = False,
) -> LoadedModel:
    """Load ``model`` (a library name or a path), or reuse it when it is already loaded.

    Args:
        model: a name as :func:`offgrid_nb.library.resolve_model` accepts, or a path.
        n_ctx: context window in tokens (default: the model's, capped by the settings).
        n_threads: CPU threads (default: physical cores).
        n_gpu_layers: layers to offload to the GPUs; ``"auto"`` (or ``None``): as many as
            fit (:func:`offgrid_nb.fit.plan_offload`; 0 on a CPU-only build), retried once
            with half as many when the load fails for memory.
        parallel: sequences decoded together, each with ``n_ctx`` tokens (default: the
            ``parallel`` setting).
        force: load even when the memory estimate says it will not fit.
        embedding: load for embeddings: pooled by the model's own pooling type, else mean.

    Returns:
        The :class:`LoadedModel`.

    Raises:
        NotFoundError, AmbiguousError: the name resolves to no model or to several.
        InvalidModelError: the file is not a valid GGUF (checked before llama.cpp sees it).
        InsufficientMemoryError: what stays in RAM would not fit in the RAM available.
        ModelLoadError: llama.cpp refused it; the message quotes llama.cpp's reason.
    """
    found = resolve_model(model)
    path = found.resolve()  # one model however it is named (HF cache files are links)
    requested = (path, n_ctx, n_threads, n_gpu_layers, embedding, parallel)
    for loaded in list(_loaded):
        if loaded.requested == requested and not loaded.closed:
            loaded.used = time.monotonic()
            return loaded  # the same call as before: no header re-read
    info = inspect_file(path)
    n_ctx = context_size(info, n_ctx)
    n_threads = n_threads or default_threads()
    parallel = 1 if embedding else parallel or get_settings().parallel
    devices = list_devices()
    plan = _plan(info, path, n_ctx, parallel, devices, force)  # alone: could it fit at all?
    if n_gpu_layers is None or n_gpu_layers == "auto":
        n_gpu_layers = plan.gpu_layers
    elif isinstance(n_gpu_layers, bool) or not isinstance(n_gpu_layers, int):
        raise InvalidArgumentError(
            f"Invalid n_gpu_layers: {n_gpu_layers!r}",
            hint='a whole number of layers (-1: all), or "auto" for as many as fit',
        )
    wanted = (path, n_ctx, n_threads, n_gpu_layers, embedding, parallel)
    with _load_lock:
        for current in _loaded:
            have = (current.path, current.n_ctx, current.n_threads, current.n_gpu_layers)
            if (*have, current.embedding, current.parallel) == wanted:
                current.used = time.monotonic()
                return current
        _make_room(path, info, (n_ctx, parallel, devices), force)
        options = {
            "model_path": str(path),
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_threads_batch": n_threads,  # llama-cpp-python would use every logical core
            "embedding": embedding,
            # every context can pool: a chat model's context embeds too (offgrid_nb.batching)
            "pooling_type": _pooling(info),
            "verbose": False,
            **_tensor_split(plan, devices),
        }
        notice = None
        try:
            try:
                llama = _new_llama(options, n_gpu_layers, parallel)
            except _LOAD_ERRORS:
                if not (isinstance(n_gpu_layers, int) and n_gpu_layers > 0):
                    raise
                if not any(_OUT_OF_MEMORY.search(line) for line in recent_log(200)):
                    raise
                fewer = n_gpu_layers // 2
                notice = (
                    f"{path.name}: {n_gpu_layers} layers did not fit in GPU memory; "
                    f"loaded with {fewer}"
                )
                _log.warning(notice)
                llama = _new_llama(options, fewer, parallel)
                n_gpu_layers = fewer
        except _LOAD_ERRORS as exc:
            lines = recent_log()
            memory = next((line for line in reversed(lines) if _OUT_OF_MEMORY.search(line)), None)
            reason = memory or next(
                (line for line in reversed(lines) if "error" in line.lower()), str(exc)
            )
            hint = (
                "GPU memory ran out: pass fewer n_gpu_layers, a smaller context or quantization"
                if memory
                else "the file may be damaged (offgrid verify NAME) or use an architecture "
                "this llama.cpp build does not support"
            )
            raise ModelLoadError(
                f"llama.cpp could not load {path.name}: {reason.strip()}", hint=hint
            ) from exc
        name = model_label(model, found)
        loaded = LoadedModel(
            path, llama, info, n_ctx, n_threads, n_gpu_layers, embedding, parallel, requested, name
        )
        loaded.devices, loaded.backend = _placement(plan, devices, n_gpu_layers)
        loaded.offload_notice = notice
        _loaded.append(loaded)
        return loaded


def _new_llama(options: dict[str, Any], n_gpu_layers: int, parallel: int) -> Any:
    """A ``llama_cpp.Llama`` with ``n_gpu_layers`` offloaded (its log captured afresh) and a
    threadpool of its own (:mod:`offgrid_nb.threadpool`), freed with its context."""
    clear_log()
    llama = llama_cpp().Llama(n_gpu_layers=n_gpu_layers, **options)
    try:
        if parallel > 1:
            _split_context(llama, options["n_ctx"], parallel)
        threadpool.attach(llama, options["n_threads"])
    except BaseException:
        llama.close()
        raise
    return llama


def _tensor_split(plan: OffloadPlan, devices: list[Device]) -> dict[str, Any]:
    """llama.cpp's ``tensor_split`` when the plan spreads layers over several GPUs (by
    default llama.cpp splits by the GPUs' total memory, not by what the plan put on each)."""
    if len(plan.device_layers) < 2:
        return {}
    layers = dict(plan.device_layers)
    return {"tensor_split": [float(layers.get(d.name, 0)) for d in gpus(devices)]}


def _placement(
    plan: OffloadPlan, devices: list[Device], n_gpu_layers: int
) -> tuple[tuple[str, ...], str]:
    """The devices holding a model's layers and their backends, for benchmark rows."""
    if n_gpu_layers == 0 or not gpus(devices):
        return ("CPU",), "CPU"
    used = [name for name, _ in plan.device_layers] or [d.name for d in gpus(devices)]
    if 0 < n_gpu_layers <= plan.n_layers:  # some layers stay on the CPU (-1: all offloaded)
        used.append("CPU")
    backend_of = {d.name: d.backend for d in devices}
    backends = dict.fromkeys(backend_of.get(name, "CPU") for name in used)
    return tuple(used), "+".join(backends)


def _split_context(llama: Any, n_ctx: int, parallel: int) -> None:
    """Give ``llama`` a context of ``parallel`` sequences of ``n_ctx`` tokens each.

    llama-cpp-python's ``Llama`` makes a one-sequence context; this one replaces it (sequence
    0 is still the high-level API's). By default each sequence gets its own KV stream
    (``kv_unified`` off, as llama-server ``-np N --no-kv-unified``): a slot's attention reads
    only its own cells, so a reply alone in its slot gives what llama-cpp-python gives
    whatever the other slots hold. With one unified buffer (the ``kv_unified`` setting,
    llama-server's default, measured ~5% more tokens/s on gemma-3-270m) the masked cells of
    other slots changed a token of the real model.
    """
    lib = llama_cpp()
    params = type(llama.context_params).from_buffer_copy(llama.context_params)
    params.n_ctx = n_ctx * parallel
    params.n_seq_max = parallel
    params.kv_unified = get_settings().kv_unified
    single = llama._ctx
    llama._ctx = lib._internals.LlamaContext(model=llama._model, params=params, verbose=False)
    llama.context_params = params
    single.close()
