"""Hub search with memory fit: :func:`offgrid_nb.hub.search` composed with
:func:`offgrid_nb.fit.add_fits`.

It lives above both so that the core layers import downwards only (``hub`` knows nothing of
``fit``, which reads GGUF headers through ``hub``); ``og.search`` is this function.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import hub
from .fit import add_fits, available_memory, machine_devices


def search(
    query: str | None = None,
    *,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
    fits_only: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Search the Hub for GGUF models, one row per repo, optionally checked for memory fit.

    Args:
        query: text to look for in repo ids.
        ram_gb: add ``fits`` (``"fits"``, ``"tight"``, ``"too large"``) and ``total_gb`` for
            this much memory, in GB, at a 4096-token context, and recommend the best variant
            that fits (see :func:`offgrid_nb.fit.add_fits`; one header read per repo).
        vram_gb: also fit a GPU of this much free memory, in GB: adds ``offload``
            (``"gpu"``, ``"partial"``, ``"cpu"``, ``"too large"``) and ``gpu_layers``
            (:func:`offgrid_nb.fit.add_fits`).
        fits_only: drop repos with no variant that fits, even tightly (with ``ram_gb`` unset,
            against the RAM available now).
        **options: the keyword options of :func:`offgrid_nb.hub.search` (``author``,
            ``quant``, ``sort``, ``limit``, ``include_gated``, ``min_downloads``, ``max_size``,
            ``only_gguf``).

    Returns:
        :func:`offgrid_nb.hub.search`'s DataFrame, plus ``fits``, ``total_gb``, ``offload``
        and ``gpu_layers`` with ``ram_gb``, ``vram_gb`` or ``fits_only`` (without
        ``ram_gb``/``vram_gb``: for this machine's RAM and GPUs).

    Raises:
        InvalidArgumentError: a bad option or ram_gb (checked before any request).
        HubUnavailableError, OfflineError, GatedRepoError: as the Hub answers.
    """
    fitting = ram_gb is not None or vram_gb is not None or fits_only
    if fitting:
        available_memory(ram_gb)  # a bad ram_gb or vram_gb fails here, before any request
        machine_devices(ram_gb=ram_gb, vram_gb=vram_gb)
    results = hub.search(query, **options)
    if not fitting:
        return results
    return add_fits(results, ram_gb=ram_gb, vram_gb=vram_gb, drop_too_large=fits_only)


__all__ = ["search"]
