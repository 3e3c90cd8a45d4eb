"""Which model fits this machine: memory estimates from GGUF headers, verdicts, recommendations.

The estimate (llama.cpp's CPU backend with llama-cpp-python's defaults: ``n_batch`` 512,
flash attention off)::

    weights  = bytes of tensor data (all shards of a split model)
    kv_cache = C * sum over layers of n_head_kv * (head_dim_k + head_dim_v) * bytes(kv_type)
    compute  = 4 * T * max(n_vocab + 2*n_embd,               # logits of a batch
                           (n_head + 1)*C + 6*n_embd,        # attention scores and mask
                           3*n_ff + C + 5*n_embd)            # feed-forward
    total    = weights + kv_cache + compute

where ``C`` is the context rounded up to a multiple of 256 (llama.cpp pads the KV cache so),
``T = min(n_batch, n_ctx)`` is the batch llama.cpp reserves its compute graph for, and
``bytes(kv_type)`` is 2 for f16, 34/32 for q8_0, 18/32 for q4_0 (block size / type size from
``gguf.GGML_QUANT_SIZES``). The compute term is the peak of llama.cpp's graph allocator: one of
the three float32 activations dominates, the logits of a whole batch for big vocabularies, the
attention scores (``n_head`` score matrices of ``T x C``, plus the mask) for long contexts.

Calibrated on this machine against the buffer sizes llama.cpp logs when it loads generated
llama models ("CPU_Mapped model buffer size", "CPU KV buffer size", "CPU compute buffer size",
captured through :func:`offgrid_nb.llama_backend.recent_log`; they are logged with
``verbose=False`` too). Over 7 shapes (2 to 6 layers, 256 to 2048 wide, feed-forward 512 to
8192, vocabularies of 288 to 32k tokens, F32 and Q4_K_M) at contexts 256 to 4096: KV cache
exact, compute buffer within 9% (within 1% for most), total within 3.1%;
``tests/test_fit.py`` checks three of them. Not modelled, so the estimate errs high: flash
attention (a smaller compute buffer), sliding-window layers (a smaller KV cache). Not modelled
and possibly low: mixture-of-experts routing buffers, multimodal projectors.
On CPUs where llama.cpp repacks Q4_0/Q4_K weights ("CPU_REPACK model buffer"), the repacked
copy replaces pages of the mapping that are then never read, so weights still count once.

Architectures without the llama-style keys (block count, heads, embedding and vocabulary size;
recurrent models, or ones the installed ``gguf`` does not know): their headers are read and
checked like any other, but :func:`estimate_memory` raises :class:`UnsupportedModelError`
naming what is missing rather than guess.

Verdicts compare the total with the available memory (``psutil``'s available RAM, or the
``ram_gb`` given): ``fits`` up to 80% of it, ``tight`` up to 100%, else ``too large``. The 20%
margin is for what the estimate leaves out: the Python process, the tokenizer, the OS.

With GPUs (:mod:`offgrid_nb.devices`), :func:`plan_offload` packs the layers into each GPU's
free memory as llama.cpp's ``--fit`` does (per layer: its tensors from the header plus its KV
cache; the output layer first, then the layers from the last back; the compute buffer on the
first GPU filled; a reserve left free on each), the rest in RAM; the offload verdict is
``gpu`` (every layer), ``partial`` (some: mostly CPU-bound, as the CPU's share is the slow
part), ``cpu`` or ``too large``, and ``fits`` is then the verdict of what stays in RAM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gguf
import pandas as pd
import psutil

from . import hub
from .config import get_settings
from .devices import Device, gpus, list_devices
from .errors import (
    GatedRepoError,
    InvalidArgumentError,
    InvalidModelError,
    NotFoundError,
    OffgridError,
    UnsupportedModelError,
)
from .gguf_info import GGUFInfo, inspect_gguf

#: KV cache types llama.cpp accepts (``--cache-type-k/v``).
KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
DEFAULT_BATCH = 512  # llama-cpp-python's n_batch (and n_ubatch)
KV_PADDING = 256  # llama.cpp rounds the KV cache up to a multiple of this
FITS_SHARE = 0.8  # up to this share of available memory: "fits"; up to all of it: "tight"
FITS, TIGHT, TOO_LARGE = "fits", "tight", "too large"
GB = 10**9  # decimal, as the Hub and `ram_gb` count
QUERY_REPOS = 5  # repos a `recommend(query=...)` looks at
INSPECT_WORKERS = 8  # header reads in flight

GPU, PARTIAL, CPU = "gpu", "partial", "cpu"  # offload verdicts (and TOO_LARGE)
PARTIAL_NOTE = "mostly CPU-bound"  # what a partial offload means for speed

FIT_COLUMNS = [
    "repo_id", "filename", "quant", "size", "size_gb", "param_size", "n_ctx", "weights_gb",
    "kv_cache_gb", "compute_gb", "total_gb", "fits", "recommended", "error",
    "offload", "gpu_layers", "n_layers", "vram_gb",
]  # fmt: skip


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory a model needs when llama.cpp loads it, in bytes (see the module docstring).

    Attributes:
        weights_bytes: tensor data.
        kv_cache_bytes: the KV cache for ``n_ctx`` tokens.
        compute_bytes: llama.cpp's compute buffer.
        total_bytes: the sum of the three.
        n_ctx: the context the estimate is for.
        kv_type: the KV cache type (``"f16"``, ``"q8_0"``...).
    """

    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    total_bytes: int
    n_ctx: int
    kv_type: str

    @property
    def total_gb(self) -> float:
        """``total_bytes`` in GB (10^9 bytes)."""
        return self.total_bytes / GB


def _kv_bytes_per_element(kv_type: str) -> float:
    name = kv_type.strip().lower()
    if name not in KV_TYPES:
        raise InvalidArgumentError(
            f"Invalid kv_type: {kv_type!r}", hint=f"use one of: {', '.join(KV_TYPES)}"
        )
    block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[name.upper()]]
    return type_size / block


def default_context(info: GGUFInfo) -> int:
    """The model's own context length, capped by the settings' ``max_ctx`` (4096 by default).

    Models advertise up to 128k tokens or more, whose KV cache alone would not fit most
    machines; llama.cpp allocates all of it up front.
    """
    cap = get_settings().max_ctx
    return min(info.context_length or cap, cap)


def _required(info: GGUFInfo, **fields: int | None) -> dict[str, int]:
    missing = [name for name, value in fields.items() if not value]
    if missing:
        known = "" if info.known_architecture else " (an architecture gguf does not know)"
        raise UnsupportedModelError(
            f"Cannot estimate the memory of this {info.architecture or 'unnamed'} "
            f"model{known}: its header has no {', '.join(missing)}",
            hint="llama.cpp may still load it; the estimate needs standard llama-style keys",
        )
    return {name: int(value) for name, value in fields.items()}  # type: ignore[arg-type]


def estimate_memory(
    info: GGUFInfo,
    n_ctx: int | None = None,
    kv_type: str = "f16",
    *,
    n_batch: int = DEFAULT_BATCH,
    weights_bytes: int | None = None,
    parallel: int = 1,
) -> MemoryEstimate:
    """Estimate the memory llama.cpp needs to run a model (formula in the module docstring).

    Args:
        info: the model's header (:func:`~offgrid_nb.gguf_info.inspect_file` or
            :func:`~offgrid_nb.gguf_info.inspect_gguf`).
        n_ctx: context in tokens; default :func:`default_context`.
        kv_type: KV cache type, one of :data:`KV_TYPES`.
        n_batch: llama.cpp's batch size (512 in llama-cpp-python).
        weights_bytes: tensor bytes of the whole model, when known better than from ``info``.
            For a split model ``info`` describes one shard, so the default is its tensor data
            times ``split_count`` (shards are cut to a maximum size, so this errs high); pass the
            sum of the shards' sizes for an exact figure.
        parallel: slots decoded together, each with its own ``n_ctx`` of KV cache
            (:func:`offgrid_nb.engine.load_model`); the compute buffer is shared.

    Returns:
        A :class:`MemoryEstimate`.

    Raises:
        InvalidArgumentError: a bad ``n_ctx``, ``n_batch`` or ``kv_type``.
        UnsupportedModelError: the header lacks what the formula needs (layer count, heads,
            embedding or vocabulary size), as for architectures without attention layers.
    """
    per_element = _kv_bytes_per_element(kv_type)
    n_ctx = default_context(info) if n_ctx is None else n_ctx
    for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("parallel", parallel)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"Invalid {name}: {value!r} (must be a whole number >= 1)")
    need = _required(
        info,
        block_count=info.n_layers,
        head_count=info.n_head,
        embedding_length=info.n_embd,
        vocab_size=info.vocab_size,
    )
    n_embd, n_head = need["embedding_length"], need["head_count"]
    head_dim = info.head_dim or n_embd // n_head
    n_head_kv = info.n_head_kv or n_head
    kv_heads = sum(info.n_head_kv_by_layer or ()) or need["block_count"] * n_head_kv
    cells = -(-n_ctx // KV_PADDING) * KV_PADDING
    kv_cache = int(cells * kv_heads * (head_dim + (info.head_dim_v or head_dim)) * per_element)
    kv_cache *= parallel

    tokens = min(n_batch, n_ctx)
    floats_per_token = max(
        need["vocab_size"] + 2 * n_embd,
        (n_head + 1) * cells + 6 * n_embd,
        3 * (info.n_ff or 0) + cells + 5 * n_embd,
    )
    compute = 4 * tokens * floats_per_token
    if weights_bytes is None:
        weights_bytes = info.tensor_data_size * info.split_count
    return MemoryEstimate(
        weights_bytes=weights_bytes,
        kv_cache_bytes=kv_cache,
        compute_bytes=compute,
        total_bytes=weights_bytes + kv_cache + compute,
        n_ctx=n_ctx,
        kv_type=kv_type.strip().lower(),
    )


def available_memory(ram_gb: float | None = None) -> int:
    """Bytes a model may use: ``ram_gb`` when given, else the RAM available now (``psutil``).

    Raises:
        InvalidArgumentError: ``ram_gb`` is not a positive number.
    """
    if ram_gb is None:
        return int(psutil.virtual_memory().available)
    if isinstance(ram_gb, bool) or not isinstance(ram_gb, int | float) or not ram_gb > 0:
        raise InvalidArgumentError(f"Invalid ram_gb: {ram_gb!r} (must be a number of GB > 0)")
    return int(ram_gb * GB)


def fit_verdict(total_bytes: int, available_bytes: int) -> str:
    """``"fits"`` (up to 80% of the available memory), ``"tight"`` (up to 100%) or
    ``"too large"``."""
    if total_bytes <= FITS_SHARE * available_bytes:
        return FITS
    return TIGHT if total_bytes <= available_bytes else TOO_LARGE


# --- where the layers go: GPU offload ---------------------------------------------------------


@dataclass(frozen=True)
class OffloadPlan:
    """Where llama.cpp would put a model's layers (:func:`plan_offload`).

    Attributes:
        n_layers: the model's repeating layers (``L``).
        gpu_layers: llama.cpp's ``n_gpu_layers``, 0 to ``L + 1``: the output layer counts as
            one and goes first, then the repeating layers from the last one back.
        device_layers: ``(device name, layers)`` for each GPU given some.
        device_bytes: ``(device name, bytes)``: what each of those GPUs holds.
        ram_bytes: what stays in system RAM (on unified memory: all of it).
        ram_verdict: :func:`fit_verdict` of ``ram_bytes`` against the RAM available.
        verdict: ``"gpu"`` (every layer offloaded), ``"partial"``, ``"cpu"`` or
            ``"too large"``.
    """

    n_layers: int
    gpu_layers: int
    device_layers: tuple[tuple[str, int], ...] = ()
    device_bytes: tuple[tuple[str, int], ...] = ()
    ram_bytes: int = 0
    ram_verdict: str = FITS
    verdict: str = CPU

    @property
    def vram_bytes(self) -> int:
        """Bytes on all GPUs together."""
        return sum(n for _, n in self.device_bytes)

    @property
    def summary(self) -> str:
        """One line: ``"gpu (33/33 layers)"``, ``"partial (20/33 layers, mostly CPU-bound)"``."""
        total = self.n_layers + 1
        if self.verdict == PARTIAL:
            return f"partial ({self.gpu_layers}/{total} layers, {PARTIAL_NOTE})"
        if self.verdict == GPU:
            return f"gpu ({total}/{total} layers)"
        return self.verdict


def _layer_costs(info: GGUFInfo, estimate: MemoryEstimate) -> list[int]:
    """Bytes of each offloadable item, in the order llama.cpp offloads them: the output layer,
    then the repeating layers from the last to the first (weights plus their KV cache).

    Weights come from the header's per-layer tensor sizes, scaled to ``estimate``'s weights (a
    variant's layers are its probe's scaled by their file sizes, :func:`_fits`). A split shard
    lists only its own layers: then the weights are spread evenly.
    """
    n_layers = info.n_layers or 0
    layers = list(info.layer_bytes)
    whole = info.tensor_data_size * info.split_count
    scale = estimate.weights_bytes / whole if whole else 1.0
    if len(layers) == n_layers and info.split_count == 1:
        weights = [round(b * scale) for b in layers]
        output = round(info.output_bytes * scale)
    else:
        output = estimate.weights_bytes // (n_layers + 1)
        weights = [output] * n_layers
    heads = list(info.n_head_kv_by_layer or ()) or [info.n_head_kv or 1] * n_layers
    heads = (heads + [0] * n_layers)[:n_layers]
    total_heads = sum(heads) or 1
    kv = [estimate.kv_cache_bytes * h // total_heads for h in heads]
    return [output] + [w + k for w, k in zip(reversed(weights), reversed(kv), strict=True)]


def plan_offload(
    info: GGUFInfo,
    estimate: MemoryEstimate,
    devices: Sequence[Device],
    *,
    ram_bytes: int,
    reserve_bytes: int | None = None,
) -> OffloadPlan:
    """Pack a model's layers into the GPUs' free memory, the rest into RAM (as llama.cpp's
    ``--fit`` does: ``common/fit.cpp``).

    Devices are filled from the last GPU back, as llama.cpp assigns layers: the last GPU gets
    the output layer and the last layers, the one before it the layers before those. Each GPU
    may use its free memory less ``reserve_bytes`` (the ``gpu_reserve`` setting; llama.cpp's
    ``--fit-target`` is 1 GiB too); the first GPU to get layers (llama.cpp's main one for the
    output) also holds the compute buffer. A device is filled while the next layer fits:
    layers are contiguous from the back, so the first that does not fit stops it.

    A unified-memory device (Apple silicon) is also bounded by ``ram_bytes``, and what it holds
    stays counted in RAM once: ``ram_bytes`` of the plan is then the whole estimate. Otherwise
    RAM holds what was not offloaded (token embeddings, the rest of the layers, and the compute
    buffer while any layer runs on the CPU).

    Args:
        info: the model's header.
        estimate: its :func:`estimate_memory`.
        devices: the devices (:func:`offgrid_nb.devices.list_devices`, or made up).
        ram_bytes: RAM available.
        reserve_bytes: free memory to leave on each GPU (default: the setting).

    Returns:
        An :class:`OffloadPlan`.
    """
    reserve = get_settings().gpu_reserve if reserve_bytes is None else reserve_bytes
    costs = _layer_costs(info, estimate)
    n_layers = len(costs) - 1
    placed = 0
    used_unified = False
    device_layers, device_bytes = [], []
    for device in reversed(gpus(devices)):
        budget = device.free_bytes - reserve
        if device.unified:
            budget = min(budget, ram_bytes)
        used = estimate.compute_bytes if placed == 0 else 0
        taken = 0
        while placed + taken < len(costs) and used + costs[placed + taken] <= budget:
            used += costs[placed + taken]
            taken += 1
        if taken:
            device_layers.append((device.name, taken))
            device_bytes.append((device.name, used))
            used_unified |= device.unified
            placed += taken
    device_layers.reverse()
    device_bytes.reverse()
    if used_unified:
        in_ram = estimate.total_bytes
    else:
        offloaded = sum(costs[:placed])
        cpu_compute = estimate.compute_bytes if placed < len(costs) else 0
        in_ram = estimate.total_bytes - estimate.compute_bytes - offloaded + cpu_compute
    ram_verdict = fit_verdict(in_ram, ram_bytes)
    if ram_verdict == TOO_LARGE:
        verdict = TOO_LARGE
    elif placed == len(costs):
        verdict = GPU
    else:
        verdict = PARTIAL if placed else CPU
    return OffloadPlan(
        n_layers=n_layers,
        gpu_layers=placed,
        device_layers=tuple(device_layers),
        device_bytes=tuple(device_bytes),
        ram_bytes=in_ram,
        ram_verdict=ram_verdict,
        verdict=verdict,
    )


def machine_plan(
    info: GGUFInfo,
    estimate: MemoryEstimate,
    *,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
) -> OffloadPlan:
    """:func:`plan_offload` on this machine, or on one of ``ram_gb`` / ``vram_gb``
    (:func:`machine_devices`).

    Raises:
        InvalidArgumentError: a bad ``ram_gb`` or ``vram_gb``.
    """
    devices = machine_devices(ram_gb=ram_gb, vram_gb=vram_gb)
    return plan_offload(info, estimate, devices, ram_bytes=available_memory(ram_gb))


def machine_devices(*, ram_gb: float | None = None, vram_gb: float | None = None) -> list[Device]:
    """The devices a fit is for: this machine's, or a made-up one.

    With neither argument: :func:`offgrid_nb.devices.list_devices`. With ``vram_gb``: one GPU
    of that much free memory (``"which variant would a 16 GB card run?"``). With ``ram_gb``
    alone: a machine of that much RAM and no GPU.

    Raises:
        InvalidArgumentError: ``vram_gb`` is not a positive number.
    """
    if vram_gb is not None:
        if isinstance(vram_gb, bool) or not isinstance(vram_gb, int | float) or vram_gb <= 0:
            raise InvalidArgumentError(f"Invalid vram_gb: {vram_gb!r} (must be a number of GB > 0)")
        size = int(vram_gb * GB)
        return [Device("GPU", f"{vram_gb:g} GB card", "gpu", "given", size, size)]
    if ram_gb is not None:
        return []
    return list_devices()


# --- many variants, few headers --------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    variant: hub.Variant
    estimate: MemoryEstimate | None
    verdict: str | None
    error: str | None
    plan: OffloadPlan | None = None


# A header that cannot be read marks its rows as unknown instead of failing the whole table;
# the Hub being down or offline still fails it.
_ROW_ERRORS = (InvalidModelError, NotFoundError, GatedRepoError)


def _fits(
    candidates: Sequence[hub.Variant],
    *,
    available: int,
    devices: Sequence[Device],
    n_ctx: int | None,
    kv_type: str,
) -> list[_Fit]:
    """Estimate every variant, reading one header per model.

    The variants of one model (same repo, same parameter size) share their architecture, so
    the KV cache and compute buffer are the same for all; only the weights differ, and those are
    each variant's size less the header. One header per model is read (the preferred
    variant's), concurrently across models.
    """
    groups: dict[tuple[str, str | None], list[hub.Variant]] = {}
    for variant in candidates:
        groups.setdefault((variant.repo_id, variant.param_size), []).append(variant)
    probes = [hub.best_variant(group) or group[0] for group in groups.values()]

    def read(probe: hub.Variant) -> GGUFInfo | OffgridError:
        try:
            return inspect_gguf(probe.repo_id, probe.filename)
        except _ROW_ERRORS as exc:
            return exc

    with ThreadPoolExecutor(max_workers=INSPECT_WORKERS) as pool:
        headers = list(pool.map(read, probes))
    fits = []
    for group, header in zip(groups.values(), headers, strict=True):
        for variant in group:
            fits.append(_fit(variant, header, available, devices, n_ctx=n_ctx, kv_type=kv_type))
    return fits


def _fit(
    variant: hub.Variant,
    header: GGUFInfo | OffgridError,
    available: int,
    devices: Sequence[Device],
    *,
    n_ctx: int | None,
    kv_type: str,
) -> _Fit:
    if isinstance(header, OffgridError):
        return _Fit(variant, None, None, header.message)
    if variant.size is None:
        return _Fit(variant, None, None, "the Hub does not list this file's size")
    try:
        weights = variant.size - header.tensor_data_offset
        estimate = estimate_memory(header, n_ctx, kv_type, weights_bytes=weights)
    except UnsupportedModelError as exc:
        return _Fit(variant, None, None, exc.message)
    plan = plan_offload(header, estimate, devices, ram_bytes=available)
    return _Fit(variant, estimate, plan.ram_verdict, None, plan)


def _pick(fits: Iterable[_Fit]) -> _Fit | None:
    """The best-ranked quantization among those that run on the GPU alone and fit, else among
    those that fit, else among the tight ones (on a machine without a GPU: fit, then tight)."""
    fits = list(fits)
    tiers = (
        lambda f: f.verdict == FITS and f.plan is not None and f.plan.verdict == GPU,
        lambda f: f.verdict == FITS,
        lambda f: f.verdict == TIGHT,
    )
    for tier in tiers:
        best = hub.best_variant(f.variant for f in fits if tier(f))
        if best is not None:
            return next(f for f in fits if f.variant is best)
    return None


def _row(fit: _Fit, recommended: bool) -> dict[str, Any]:
    variant, estimate = fit.variant, fit.estimate

    def gb(value: int | None) -> float | None:
        return None if value is None else value / GB

    return {
        "repo_id": variant.repo_id,
        "filename": variant.filename,
        "quant": variant.quant,
        "size": variant.size,
        "size_gb": gb(variant.size),
        "param_size": variant.param_size,
        "n_ctx": estimate.n_ctx if estimate else None,
        "weights_gb": gb(estimate.weights_bytes) if estimate else None,
        "kv_cache_gb": gb(estimate.kv_cache_bytes) if estimate else None,
        "compute_gb": gb(estimate.compute_bytes) if estimate else None,
        "total_gb": estimate.total_gb if estimate else None,
        "fits": fit.verdict,
        "recommended": recommended,
        "error": fit.error,
        **_offload_columns(fit.plan),
    }


def _offload_columns(plan: OffloadPlan | None) -> dict[str, Any]:
    """``offload`` (the verdict), ``gpu_layers`` (llama.cpp's n_gpu_layers), ``n_layers``
    (offloadable layers: the repeating ones and the output) and ``vram_gb``."""
    if plan is None:
        return {"offload": None, "gpu_layers": None, "n_layers": None, "vram_gb": None}
    return {
        "offload": plan.verdict,
        "gpu_layers": plan.gpu_layers,
        "n_layers": plan.n_layers + 1,
        "vram_gb": plan.vram_bytes / GB,
    }


def _repo_ids(repo_id: str | None, query: str | None) -> list[str]:
    if (repo_id is None) == (query is None):
        raise InvalidArgumentError(
            "Give either a repository or a query", hint="recommend('owner/name') or query='llama'"
        )
    if repo_id is not None:
        return [repo_id]
    return list(hub.search(query, limit=QUERY_REPOS)["id"])


def recommend(
    repo_id: str | None = None,
    *,
    query: str | None = None,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
    n_ctx: int | None = 4096,
    kv_type: str = "f16",
) -> pd.DataFrame:
    """Every GGUF variant with its memory estimate and whether it fits; the best one marked.

    Args:
        repo_id: one repo (``owner/name``); or
        query: search the Hub and look at the top 5 repos.
        ram_gb: memory to fit in, in GB (10^9 bytes); default: the RAM available now.
        vram_gb: free GPU memory to fit in, in GB: one card of that size (with ``ram_gb``
            or the RAM available now); default: this machine's GPUs, or none with ``ram_gb``
            alone (:func:`machine_devices`).
        n_ctx: context in tokens (``None``: each model's own, capped, see
            :func:`default_context`).
        kv_type: KV cache type, one of :data:`KV_TYPES`.

    Returns:
        DataFrame with columns ``repo_id, filename, quant, size, size_gb, param_size, n_ctx,
        weights_gb, kv_cache_gb, compute_gb, total_gb, fits, recommended, error, offload,
        gpu_layers, n_layers, vram_gb``, one row per variant, repos in search order and
        variants smallest first. ``fits`` is ``"fits"``, ``"tight"``, ``"too large"`` for what
        stays in RAM, or ``None`` with the reason in ``error`` when the header could not be
        read or estimated. ``offload`` is ``"gpu"`` (all ``n_layers`` on the GPUs),
        ``"partial"`` (``gpu_layers`` of them: mostly CPU-bound), ``"cpu"`` or ``"too
        large"`` (:func:`plan_offload`); ``vram_gb`` what the GPUs would hold.
        ``recommended`` marks, per repo, the best-ranked quantization
        (``offgrid_nb.names.QUANT_PREFERENCE``) among the variants that run on the GPU alone
        and fit, else among those that fit, else the tight ones; none when all are too large.
        ``df.attrs["available_bytes"]`` is the RAM compared against, ``df.attrs["devices"]``
        the devices.

    Raises:
        InvalidArgumentError: neither or both of ``repo_id`` and ``query``; a bad ``ram_gb``,
            ``n_ctx`` or ``kv_type``.
        NotFoundError, GatedRepoError, HubUnavailableError, OfflineError: as the Hub answers.
    """
    _kv_bytes_per_element(kv_type)  # fail on a bad argument before any request
    available = available_memory(ram_gb)
    devices = machine_devices(ram_gb=ram_gb, vram_gb=vram_gb)
    candidates = [v for rid in _repo_ids(repo_id, query) for v in hub.variants(rid)]
    fits = _fits(candidates, available=available, devices=devices, n_ctx=n_ctx, kv_type=kv_type)
    rows = []
    for rid in dict.fromkeys(f.variant.repo_id for f in fits):
        repo_fits = [f for f in fits if f.variant.repo_id == rid]
        best = _pick(repo_fits)
        rows.extend(_row(f, f is best) for f in repo_fits)
    df = pd.DataFrame(rows, columns=FIT_COLUMNS)
    df.attrs["available_bytes"] = available
    df.attrs["devices"] = devices
    return df


def recommended_variant(
    repo_id: str,
    *,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
    n_ctx: int | None = 4096,
) -> hub.Variant | None:
    """The variant of ``repo_id`` to download on this machine (the rule of :func:`recommend`).

    Args:
        repo_id: ``owner/name`` on the Hub.
        ram_gb: memory to fit in, in GB; default: the RAM available now.
        vram_gb: free GPU memory to fit in, in GB: one card of that size (with ``ram_gb``
            or the RAM available now); default: this machine's GPUs, or none with ``ram_gb``
            alone (:func:`machine_devices`).
        n_ctx: context the model will run with.

    Returns:
        The best-ranked variant that fits (else the best tight one), or ``None`` when every
        variant is too large or none could be estimated.

    Raises:
        NotFoundError, GatedRepoError, HubUnavailableError, OfflineError: as the Hub answers.
    """
    available = available_memory(ram_gb)
    devices = machine_devices(ram_gb=ram_gb, vram_gb=vram_gb)
    fits = _fits(
        hub.variants(repo_id), available=available, devices=devices, n_ctx=n_ctx, kv_type="f16"
    )
    best = _pick(fits)
    return best.variant if best else None


def add_fits(
    results: pd.DataFrame,
    *,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
    n_ctx: int | None = 4096,
    drop_too_large: bool = False,
) -> pd.DataFrame:
    """Add ``fits``, ``total_gb``, ``offload`` and ``gpu_layers`` to search results.

    Each repo's recommended variant is chosen again among the variants that fit (then the tight
    ones); the ``best_*`` columns and ``download_command`` follow. One header is read per model
    (see :func:`recommend`).

    Args:
        results: a search result.
        ram_gb: memory to fit in, in GB; default: the RAM available now.
        vram_gb: free GPU memory to fit in, in GB: one card of that size (with ``ram_gb``
            or the RAM available now); default: this machine's GPUs, or none with ``ram_gb``
            alone (:func:`machine_devices`).
        n_ctx: context in tokens the estimates are for.
        drop_too_large: drop the repos with no variant that fits, even tightly.

    Returns:
        A new DataFrame; ``fits`` is ``None`` for a repo whose header could not be read.
    """
    available = available_memory(ram_gb)
    shown = {row.id: {v["filename"] for v in row.variants} for row in results.itertuples()}
    candidates = [
        v for rid, files in shown.items() for v in hub.variants(rid) if v.filename in files
    ]
    devices = machine_devices(ram_gb=ram_gb, vram_gb=vram_gb)
    fits = _fits(candidates, available=available, devices=devices, n_ctx=n_ctx, kv_type="f16")
    df = results.copy()
    df["fits"] = None
    df["total_gb"] = float("nan")
    df["offload"] = None
    df["gpu_layers"] = None
    for index, rid in df["id"].items():
        repo_fits = [f for f in fits if f.variant.repo_id == rid]
        best = _pick(repo_fits) or next(
            (f for f in repo_fits if f.variant.filename == df.at[index, "best_file"]), None
        )
        if best is None:
            continue
        for column, value in hub.best_columns(rid, best.variant).items():
            df.at[index, column] = value
        df.at[index, "fits"] = best.verdict
        if best.estimate is not None:
            df.at[index, "total_gb"] = best.estimate.total_gb
        if best.plan is not None:
            df.at[index, "offload"] = best.plan.verdict
            df.at[index, "gpu_layers"] = best.plan.gpu_layers
    if drop_too_large:
        df = df[df["fits"] != TOO_LARGE].reset_index(drop=True)
        df.attrs["total"] = len(df)
    return df


__all__ = [
    "CPU",
    "FITS",
    "GPU",
    "KV_TYPES",
    "PARTIAL",
    "TIGHT",
    "TOO_LARGE",
    "MemoryEstimate",
    "OffloadPlan",
    "add_fits",
    "available_memory",
    "default_context",
    "estimate_memory",
    "fit_verdict",
    "machine_devices",
    "machine_plan",
    "plan_offload",
    "recommend",
    "recommended_variant",
]
