"""offgrid_nb: find, pull, chat with and benchmark open GGUF models from Jupyter, offline."""

from __future__ import annotations

from .errors import (
    AmbiguousError,
    GatedRepoError,
    HubUnavailableError,
    InvalidArgumentError,
    NotFoundError,
    OffgridError,
    OfflineError,
)
from .hub import best_variant, clear_cache, repo_files, search

__version__ = "0.1.0"

__all__ = [
    "AmbiguousError",
    "GatedRepoError",
    "HubUnavailableError",
    "InvalidArgumentError",
    "NotFoundError",
    "OffgridError",
    "OfflineError",
    "__version__",
    "best_variant",
    "clear_cache",
    "repo_files",
    "search",
]
