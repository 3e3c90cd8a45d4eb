"""The REST API's settings: one traitlets ``Configurable``, set like any Jupyter option.

In ``jupyter_server_config.py``: ``c.OffgridAPI.max_download_jobs = 4``; on the command line:
``jupyter server --OffgridAPI.models_dir=/data/models``. ``offgrid serve`` fills it from flags.
"""

from __future__ import annotations

from traitlets import Int, Unicode
from traitlets.config import Configurable


class OffgridAPI(Configurable):
    """Settings of offgrid_nb's ``/v1`` endpoints."""

    models_dir = Unicode(
        "",
        help="Folder of local models (default: OFFGRID_MODELS_DIR, else the user data folder).",
    ).tag(config=True)

    max_download_jobs = Int(
        2,
        min=1,
        help="Downloads that may run at once; one more is refused with 503 until one ends.",
    ).tag(config=True)

    parallel = Int(
        4,
        min=1,
        help="Generations decoded together (slots); each slot has its own context of KV "
        "cache, so memory grows with it. 4 measured best (benchmarks/concurrency.py).",
    ).tag(config=True)

    max_queued_generations = Int(
        512,
        min=0,
        help="Model requests (chats, completions, embeddings, benchmarks) that may wait while "
        "every slot is busy, as Ollama's OLLAMA_MAX_QUEUE; one more is refused with 503 and "
        "Retry-After. Each model's queue is bounded too (OFFGRID_MAX_QUEUE), and a request "
        "waiting longer than OFFGRID_QUEUE_TIMEOUT is refused the same way.",
    ).tag(config=True)

    default_threads = Int(
        0,
        min=0,
        help="CPU threads for chat and benchmarks (0: the physical cores).",
    ).tag(config=True)

    keep_alive = Unicode(
        "5m",
        help="How long a model stays loaded after its last request (Ollama's forms: 300, 5m, "
        "1h; 0 unloads at once; -1 keeps it). A request's keep_alive overrides it.",
    ).tag(config=True)

    max_search_limit = Int(
        100,
        min=1,
        max=1000,
        help="Largest `limit` a search may ask for (each result costs a request to the Hub).",
    ).tag(config=True)
