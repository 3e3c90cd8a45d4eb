"""Settings from the environment and arguments, resolved in one place.

No other module reads ``os.environ``. The Hub endpoint, token and offline switch are resolved
as ``huggingface_hub`` resolves them, but at call time (``huggingface_hub.constants`` reads the
environment once, at import), so a notebook can point at a mirror after importing us.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_token

from .errors import InvalidArgumentError

APP_NAME = "offgrid_nb"
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}
# Where other tools keep their models (see offgrid_nb.sources), in the order listings show them.
SOURCE_IDS = ("offgrid", "hf-cache", "lmstudio", "ollama", "llama.cpp", "folder")


# Every environment variable we read, and what it does: the settings page of the docs is
# generated from this table (docs/settings_table.py), and a test checks that every variable
# this module reads is in it.
ENVIRONMENT: dict[str, str] = {
    "HF_ENDPOINT": "the Hub to talk to (a mirror, e.g. `offgrid mirror`); default "
    "`https://huggingface.co`",
    "HF_TOKEN": "token for gated and private repos (else the one `hf auth login` saved)",
    "HF_HUB_OFFLINE": '`1`: no network; Hub calls fail with a clear "offline" error',
    "HF_HOME": "the Hugging Face home; its `hub/` is the HF cache unless `HF_HUB_CACHE` is set",
    "HF_HUB_CACHE": "where the Hugging Face cache is (the `hf-cache` source), as "
    "`huggingface_hub` reads it",
    "XDG_CACHE_HOME": "the user cache folder (`~/.cache`), under which the HF cache and "
    "llama.cpp's cache live on Linux",
    "OFFGRID_MODELS_DIR": "where models are kept (default: the platform's user data folder)",
    "OFFGRID_CACHE_DIR": "where caches are kept (default: the platform's user cache folder)",
    "OFFGRID_MAX_CTX": "default context cap when loading a model (4096)",
    "OFFGRID_DOWNLOAD_CONNECTIONS": "parts of a file downloaded at once, 1 to 64 (unset: "
    "adaptive, 2 at first, doubled up to 16 while that raises the speed and the CPU keeps up)",
    "OFFGRID_PARALLEL": "replies decoded together in this process (1; each slot has its own "
    "context)",
    "OFFGRID_KV_UNIFIED": "`1`: the slots share one KV buffer, as llama-server's default "
    "(~5% more tokens/s with several clients; a reply may then differ in its last digits, so "
    "a greedy reply can change with what other slots hold) (off: a KV stream per slot)",
    "OFFGRID_MAX_QUEUE": "replies waiting for a slot of one model before more are refused "
    "(503 with `Retry-After`), as Ollama's `OLLAMA_MAX_QUEUE` (512)",
    "OFFGRID_QUEUE_TIMEOUT": "seconds a reply may wait for a slot before it is refused (503 "
    "with `Retry-After`) (300)",
    "OFFGRID_MAX_LOADED_MODELS": "models kept loaded at once, the least recently used freed "
    "first, as Ollama's `OLLAMA_MAX_LOADED_MODELS` (3; fewer when memory runs short)",
    "OFFGRID_THREADS": "CPU threads a model computes with (default: the physical cores; "
    "llama.cpp gains nothing from hyper-threads)",
    "OFFGRID_POLL": "how hard llama.cpp's threads poll for the next decode before they sleep, "
    "0 (not at all) to 100 (50, llama.cpp's default)",
    "OFFGRID_GPU_RESERVE_MB": "GPU memory the fit leaves free on each GPU, in MB (1024)",
    "OFFGRID_SOURCES": "which model sources are on: comma-separated "
    "`offgrid,hf-cache,lmstudio,ollama,llama.cpp,folder`, or `all` (default: all whose "
    "folder exists)",
    "OFFGRID_MODEL_DIRS": "more folders of GGUF files (`os.pathsep`-separated), listed as `folder`",
    "OFFGRID_LMSTUDIO_DIRS": "LM Studio's models folders, if not the default ones "
    "(`os.pathsep`-separated)",
    "OLLAMA_MODELS": "Ollama's model store (default `~/.ollama/models`), as Ollama reads it",
    "LLAMA_CACHE": "llama.cpp's download cache, as llama.cpp reads it",
    "LOCALAPPDATA": "on Windows, where llama.cpp's cache is by default",
}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _paths(text: str) -> tuple[Path, ...]:
    """Folders from an ``os.pathsep``-separated list (empty entries ignored)."""
    return tuple(Path(p).expanduser() for p in text.split(os.pathsep) if p.strip())


def _user_cache(env: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache`` (where the HF cache and llama.cpp's live on Linux)."""
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()


def _lmstudio_dirs(env: Mapping[str, str]) -> tuple[Path, ...]:
    """LM Studio's models folders, current and older; ``OFFGRID_LMSTUDIO_DIRS`` replaces them."""
    home = Path.home()
    return _paths(env.get("OFFGRID_LMSTUDIO_DIRS", "")) or (
        home / ".lmstudio/models",
        home / ".cache/lm-studio/models",
    )


def _hf_cache(env: Mapping[str, str]) -> Path:
    """The Hugging Face cache as ``huggingface_hub`` resolves it, but now, not at its import."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME")
    return (Path(home).expanduser() if home else _user_cache(env) / "huggingface") / "hub"


def _llama_cache(env: Mapping[str, str]) -> Path:
    """llama.cpp's download cache: ``LLAMA_CACHE``, else its per-platform default."""
    if env.get("LLAMA_CACHE"):
        return Path(env["LLAMA_CACHE"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "llama.cpp"
    if sys.platform == "win32" and env.get("LOCALAPPDATA"):
        return Path(env["LOCALAPPDATA"]) / "llama.cpp"
    return _user_cache(env) / "llama.cpp"


def _sources(text: str | None) -> tuple[str, ...]:
    """Which model sources are on: ``OFFGRID_SOURCES`` (comma-separated ids, or ``all``)."""
    if not text or text.strip().lower() == "all":
        return SOURCE_IDS
    wanted = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in wanted if s not in SOURCE_IDS]
    if unknown:
        raise InvalidArgumentError(
            f"Unknown model source in OFFGRID_SOURCES: {', '.join(unknown)}",
            hint=f"known: {', '.join(SOURCE_IDS)}, or all",
        )
    return wanted


def _whole(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    """A whole number from ``low`` to ``high`` in ``env[name]``; ``None`` when unset."""
    text = env.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidArgumentError(
            f"Invalid {name}: {text!r}", hint=f"a whole number from {low} to {high}"
        )
    return int(text)


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build one with :func:`get_settings`; override fields with ``replace``."""

    models_dir: Path
    endpoint: str
    token: str | None = field(default=None, repr=False)
    offline: bool = False
    cache_dir: Path = field(default_factory=lambda: Path(platformdirs.user_cache_dir(APP_NAME)))
    hub_workers: int = 20  # per-repo calls in flight; 20 fills a default search page at once
    hub_timeout: float = 10.0
    hub_retries: int = 3
    max_ctx: int = 4096  # default context cap: a model's own (often 128k) would exhaust RAM
    # parts of a file downloaded at once; None: adaptive (offgrid_nb.download._Ramp), since no
    # fixed count suits every link (benchmarks/download_throughput.py): a capped link wants
    # many, a fast LAN few (there the CPU is the limit and more connections only cost)
    download_connections: int | None = None
    # Model sources (offgrid_nb.sources): which are on, and where each looks. A folder that
    # does not exist is skipped, so "all" means all that exist.
    sources: tuple[str, ...] = SOURCE_IDS
    hf_cache_dir: Path | None = None  # None: not looked at
    lmstudio_dirs: tuple[Path, ...] = ()
    ollama_dir: Path | None = None
    llama_cache_dir: Path | None = None
    model_dirs: tuple[Path, ...] = ()  # OFFGRID_MODEL_DIRS: any other folders of GGUF files
    # Replies decoded together (each slot has its own n_ctx of KV cache): 1 in a notebook
    # kernel; the servers set their own (OffgridAPI.parallel, 4 by measurement).
    parallel: int = 1
    kv_unified: bool = False  # one KV buffer for all slots (OFFGRID_KV_UNIFIED; engine.py)
    # free memory the fit leaves on each GPU (OFFGRID_GPU_RESERVE_MB): drivers, the desktop,
    # other programs; llama.cpp's --fit leaves 1 GiB too (common.h fit_params_target)
    gpu_reserve: int = 1 << 30
    # the queue in front of each loaded model's slots (offgrid_nb.batching): Ollama's
    # OLLAMA_MAX_QUEUE is 512; a reply waiting longer than queue_timeout seconds is refused
    max_queue: int = 512
    queue_timeout: float = 300.0
    # models loaded at once (offgrid_nb.engine), as Ollama's OLLAMA_MAX_LOADED_MODELS (3 per GPU)
    max_loaded_models: int = 3
    threads: int | None = None  # OFFGRID_THREADS; None: the physical cores (engine)
    # the threadpool's polling level between graphs (offgrid_nb.threadpool), as llama-bench's
    # and llama-server's --poll; 50 is their default
    poll: int = 50

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_overrides: dict[str, object] = {}


@contextmanager
def settings_override(**fields: object) -> Iterator[None]:
    """Process-wide setting overrides for a block (the demo points everything at its mirror)."""
    saved = dict(_overrides)
    _overrides.update({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(saved)


def get_settings(**overrides: object) -> Settings:
    """Resolve settings from the environment now; keyword arguments win over it.

    Args:
        **overrides: any :class:`Settings` field (``None`` means "not given"); they win over
            :func:`settings_override` too.

    Returns:
        The resolved :class:`Settings`.
    """
    env = os.environ
    models_dir = env.get("OFFGRID_MODELS_DIR") or platformdirs.user_data_dir(APP_NAME)
    cache_dir = env.get("OFFGRID_CACHE_DIR") or platformdirs.user_cache_dir(APP_NAME)
    settings = Settings(
        models_dir=Path(models_dir).expanduser(),
        endpoint=(env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        token=env.get("HF_TOKEN") or get_token(),
        offline=_env_flag("HF_HUB_OFFLINE") or hf_constants.HF_HUB_OFFLINE,
        cache_dir=Path(cache_dir).expanduser(),
        sources=_sources(env.get("OFFGRID_SOURCES")),
        hf_cache_dir=_hf_cache(env),
        lmstudio_dirs=_paths(env.get("OFFGRID_LMSTUDIO_DIRS", ""))
        or (Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"),
        ollama_dir=Path(
            env.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models"
        ).expanduser(),
        llama_cache_dir=_llama_cache(env),
        model_dirs=_paths(env.get("OFFGRID_MODEL_DIRS", "")),
        kv_unified=_env_flag("OFFGRID_KV_UNIFIED"),
    )
    for name, key in (
        ("max_ctx", "OFFGRID_MAX_CTX"),
        ("download_connections", "OFFGRID_DOWNLOAD_CONNECTIONS"),
        ("max_queue", "OFFGRID_MAX_QUEUE"),
        ("queue_timeout", "OFFGRID_QUEUE_TIMEOUT"),
    ):
        if env.get(key, "").isdigit():
            settings = replace(settings, **{name: int(env[key])})
    if env.get("OFFGRID_GPU_RESERVE_MB", "").isdigit():
        settings = replace(settings, gpu_reserve=int(env["OFFGRID_GPU_RESERVE_MB"]) << 20)
    for name, key in (
        ("parallel", "OFFGRID_PARALLEL"),
        ("max_loaded_models", "OFFGRID_MAX_LOADED_MODELS"),
    ):
        if env.get(key, "").isdigit() and int(env[key]) > 0:
            settings = replace(settings, **{name: int(env[key])})
    threads = _whole(env, "OFFGRID_THREADS", 1, 512)  # GGML_MAX_N_THREADS
    poll = _whole(env, "OFFGRID_POLL", 0, 100)
    settings = settings.with_overrides(threads=threads, poll=poll)
    return settings.with_overrides(**{**_overrides, **overrides})
