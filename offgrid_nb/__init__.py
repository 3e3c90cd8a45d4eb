"""offgrid_nb: find, pull, chat with and benchmark open GGUF models from Jupyter, offline.

Search and the library import fast; the llama.cpp parts (chat, benchmark, engine), the fleet
and the notebook panels are imported on first use (PEP 562), so ``import offgrid_nb`` stays
light; Dask (``fleet``) is imported only when a cluster is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Imported now, not lazily: importing a submodule named as its function (``offgrid_nb.download``,
# as the panels do) would otherwise replace the function ``offgrid_nb.download`` with the module.
# None of them imports llama.cpp (~60 ms in all); test_package.py checks every such name.
from .download import DownloadProgress, download, select_variant
from .embed import embed
from .errors import (
    AmbiguousError,
    GatedRepoError,
    HubUnavailableError,
    InvalidArgumentError,
    InvalidModelError,
    NotFoundError,
    OffgridError,
    OfflineError,
)
from .hub import best_variant, clear_cache, repo_files
from .perplexity import perplexity
from .quality import quality

__version__ = "0.1.0"

_LAZY = {
    "search": "search_fit",  # Hub search, with memory fit when asked (ram_gb=, fits_only=)
    "list_models": "library",
    "resolve_model": "library",
    "remove_model": "library",
    "verify_model": "library",
    "Chat": "chat",
    "complete": "chat",
    "generate": "chat",
    "load_model": "engine",
    "unload_model": "engine",
    "benchmark": "bench",
    "compare": "fleet",  # here, or on a Dask cluster with client=
    "fleet_benchmark": "fleet",
    "plot_comparison": "bench",
    "save_runs": "bench",
    "load_runs": "bench",
    "inspect_gguf": "gguf_info",
    "inspect_file": "gguf_info",
    "estimate_memory": "fit",
    "recommend": "fit",
    "recommended_variant": "fit",
    "plot_quality": "quality",
    "pick_quant": "quality",
    "panel": "widgets",
    "hardware": "devices",  # this llama.cpp build's devices (CPU, GPUs) and their memory
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'offgrid_nb' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where Jupyter Server finds our extension (enabled as ``offgrid_nb``)."""
    return [{"module": "offgrid_nb.server"}]


__all__ = [
    "AmbiguousError",
    "GatedRepoError",
    "HubUnavailableError",
    "InvalidArgumentError",
    "InvalidModelError",
    "NotFoundError",
    "OffgridError",
    "OfflineError",
    "__version__",
    "best_variant",
    "DownloadProgress",
    "clear_cache",
    "download",
    "embed",
    "perplexity",
    "quality",
    "repo_files",
    "select_variant",
    *_LAZY,
]
