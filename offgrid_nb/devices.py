"""The devices this llama.cpp build can run a model on, with their free and total memory.

Read from the installed build itself: ggml's backend registry (``ggml_backend_reg_*``) and
device list (``ggml_backend_dev_*``), in the ``libggml`` / ``libggml-base`` that llama-cpp-python
ships beside ``libllama``, through ctypes (llama-cpp-python binds none of them). A CPU-only build
lists the CPU alone. The CPU's free memory is the RAM available now (``psutil``'s
``MemAvailable``), not what ggml reports (its total RAM as free).

On Apple silicon the Metal device's memory is its recommended working set, and it is the same
RAM the CPU uses: such a device is :attr:`Device.unified`, and the fit counts what it holds
against both budgets, never twice (:func:`offgrid_nb.fit.plan_offload`).

NVIDIA cards are also looked for through NVML (``nvidia-ml-py``, optional): a card this build
cannot use gets a notice with the rebuild command (:func:`build_notice`).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import psutil

from .llama_backend import llama_cpp

# ggml_backend_dev_type (ggml-backend.h), in order
DEVICE_KINDS = ("cpu", "gpu", "igpu", "accel", "meta")
CUDA_REBUILD = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
)
HARDWARE_COLUMNS = [
    "name", "description", "kind", "backend", "free_gb", "total_gb", "unified",
]  # fmt: skip
GB = 10**9


@dataclass(frozen=True)
class Device:
    """One device of the llama.cpp build.

    Attributes:
        name: ggml's name (``"CPU"``, ``"CUDA0"``, ``"Metal"``, ``"Vulkan0"``...).
        description: the hardware (``"NVIDIA GeForce RTX 4090"``, the CPU's model...).
        kind: ``"cpu"``, ``"gpu"``, ``"igpu"`` (integrated, host memory), ``"accel"``.
        backend: the backend that registered it (``"CPU"``, ``"CUDA"``, ``"Metal"``...).
        free_bytes: memory free now (for the CPU: RAM available).
        total_bytes: its memory (Metal: the recommended working set).
        unified: its memory is system RAM (Apple silicon, integrated GPUs).
    """

    name: str
    description: str
    kind: str
    backend: str
    free_bytes: int
    total_bytes: int
    unified: bool = False

    @property
    def is_gpu(self) -> bool:
        """A device llama.cpp offloads layers to (``n_gpu_layers``)."""
        return self.kind in ("gpu", "igpu")


@functools.cache
def _ggml() -> ctypes.CDLL:
    """``libggml`` of the installed llama-cpp-python, with the prototypes we call.

    ``llama_cpp._ggml`` loads it (from llama_cpp's ``lib`` folder, as libllama); the
    ``ggml_backend_dev_*`` accessors live in ``libggml-base``, which libggml links, so the
    same handle finds them.
    """
    llama_cpp()  # loads libllama and its backends first
    from llama_cpp import _ggml as ggml_module

    lib = ggml_module.libggml
    pointer, size = ctypes.c_void_p, ctypes.c_size_t
    prototypes: dict[str, tuple[list[Any], Any]] = {
        "ggml_backend_reg_count": ([], size),
        "ggml_backend_reg_get": ([size], pointer),
        "ggml_backend_reg_name": ([pointer], ctypes.c_char_p),
        "ggml_backend_dev_count": ([], size),
        "ggml_backend_dev_get": ([size], pointer),
        "ggml_backend_dev_name": ([pointer], ctypes.c_char_p),
        "ggml_backend_dev_description": ([pointer], ctypes.c_char_p),
        "ggml_backend_dev_type": ([pointer], ctypes.c_int),
        "ggml_backend_dev_memory": (
            [pointer, ctypes.POINTER(size), ctypes.POINTER(size)],
            None,
        ),
        "ggml_backend_dev_backend_reg": ([pointer], pointer),
    }
    for name, (argtypes, restype) in prototypes.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    return lib


def backends() -> list[str]:
    """Names of the backends this build registered (``["CPU"]`` on a CPU-only build)."""
    lib = _ggml()
    return [
        lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)).decode()
        for i in range(lib.ggml_backend_reg_count())
    ]


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""


def list_devices() -> list[Device]:
    """The devices of this llama.cpp build, as ggml lists them, with memory free now.

    Returns:
        One :class:`Device` per ggml device; the CPU's ``free_bytes`` is the RAM available.
    """
    lib = _ggml()
    found = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        type_id = lib.ggml_backend_dev_type(dev)
        kind = DEVICE_KINDS[type_id] if 0 <= type_id < len(DEVICE_KINDS) else "accel"
        backend = _text(lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)))
        free_bytes = int(free.value)
        if kind == "cpu":
            free_bytes = int(psutil.virtual_memory().available)
        found.append(
            Device(
                name=_text(lib.ggml_backend_dev_name(dev)),
                description=_text(lib.ggml_backend_dev_description(dev)),
                kind=kind,
                backend=backend,
                free_bytes=free_bytes,
                total_bytes=int(total.value),
                unified=kind == "igpu" or backend in ("Metal", "MTL"),
            )
        )
    return found


def gpus(devices: Sequence[Device]) -> list[Device]:
    """The devices layers can be offloaded to, in llama.cpp's order."""
    return [d for d in devices if d.is_gpu]


def nvml_gpus() -> list[str] | None:
    """Names of the NVIDIA cards NVML sees, or ``None`` when NVML is not there.

    ``nvidia-ml-py`` (import ``pynvml``) is optional; without it, or without the NVIDIA
    driver, there is nothing to ask.
    """
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        names = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
            names.append(name.decode() if isinstance(name, bytes) else str(name))
        return names
    finally:
        pynvml.nvmlShutdown()


def build_notice(devices: Sequence[Device] | None = None) -> str | None:
    """A line for the user when NVIDIA cards are present but this build cannot use them.

    Args:
        devices: this build's devices (default: :func:`list_devices`).

    Returns:
        The notice, with the rebuild command; ``None`` when there is nothing to say.
    """
    cards = nvml_gpus()
    if not cards:
        return None
    devices = list_devices() if devices is None else devices
    if any(d.backend in ("CUDA", "Vulkan") for d in devices):
        return None
    return (
        f"{len(cards)} NVIDIA GPU(s) found ({', '.join(cards)}) but this llama-cpp-python build "
        f"cannot use them (CPU only); rebuild it with CUDA: {CUDA_REBUILD}"
    )


def hardware(devices: Sequence[Device] | None = None) -> pd.DataFrame:
    """The devices as a table (``og.hardware()``).

    Args:
        devices: the devices to show (default: :func:`list_devices`).

    Returns:
        DataFrame with columns ``name, description, kind, backend, free_gb, total_gb,
        unified``; ``df.attrs["notice"]`` is :func:`build_notice` (or ``None``) and
        ``df.attrs["backends"]`` the registered backends.
    """
    devices = list_devices() if devices is None else list(devices)
    rows = []
    for device in devices:
        data = asdict(device)
        data["free_gb"] = data.pop("free_bytes") / GB
        data["total_gb"] = data.pop("total_bytes") / GB
        rows.append(data)
    df = pd.DataFrame(rows, columns=HARDWARE_COLUMNS)
    df.attrs["notice"] = build_notice(devices)
    df.attrs["backends"] = backends()
    return df


__all__ = [
    "CUDA_REBUILD",
    "Device",
    "backends",
    "build_notice",
    "gpus",
    "hardware",
    "list_devices",
    "nvml_gpus",
]
