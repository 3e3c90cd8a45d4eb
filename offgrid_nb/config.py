"""Settings from the environment and arguments, resolved in one place.

No other module reads ``os.environ``. The Hub endpoint, token and offline switch are resolved
as ``huggingface_hub`` resolves them, but at call time (``huggingface_hub.constants`` reads the
environment once, at import), so a notebook can point at a mirror after importing us.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import platformdirs
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_token

APP_NAME = "offgrid_nb"
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


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
    # Replies decoded together (each slot has its own n_ctx of KV cache): 1 in a notebook
    # kernel; the servers set their own (OffgridAPI.parallel, 4 by measurement).
    parallel: int = 1

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
    )
    if env.get("OFFGRID_MAX_CTX", "").isdigit():
        settings = replace(settings, max_ctx=int(env["OFFGRID_MAX_CTX"]))
    if env.get("OFFGRID_PARALLEL", "").isdigit() and int(env["OFFGRID_PARALLEL"]) > 0:
        settings = replace(settings, parallel=int(env["OFFGRID_PARALLEL"]))
    return settings.with_overrides(**{**_overrides, **overrides})
