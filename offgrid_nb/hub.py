"""The Hugging Face Hub as DataFrames: search, the GGUF variants of a repo, scoring, best variant.

Every call goes through ``huggingface_hub`` (its HTTP session, headers, token and error classes)
against the endpoint :mod:`offgrid_nb.config` resolves, so a mirror set with ``HF_ENDPOINT`` is
used exactly like the Hub.

The Hub's list call carries no file sizes, so a search needs one ``model_info`` call per repo.
We make those concurrently (a bounded pool), skip repos that cheap filters already exclude (from
the list call's own fields and file names), and keep results for a short time so a repeated
search makes no request at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import httpx2
import pandas as pd
from cachetools import TTLCache
from huggingface_hub import HfApi, ModelInfo, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from . import names
from .config import Settings, get_settings
from .errors import (
    GatedRepoError,
    HubUnavailableError,
    InvalidArgumentError,
    NotFoundError,
    OfflineError,
)
from .sizes import parse_size

T = TypeVar("T")

# User-facing sort names (and the Hub's own spellings) -> the Hub's list-call sort key.
SORTS: dict[str, str] = {
    "downloads": "downloads",
    "likes": "likes",
    "created": "createdAt",
    "createdat": "createdAt",
    "created_at": "createdAt",
    "modified": "lastModified",
    "lastmodified": "lastModified",
    "last_modified": "lastModified",
    "updated": "lastModified",
    "trending": "trendingScore",
    "trendingscore": "trendingScore",
    "relevance": "relevance",
    "score": "relevance",
}
# What a row needs from the list call. Without `expand` the Hub leaves out lastModified and
# gated, and the recency bonus of the score would silently always be zero.
LIST_EXPAND = (
    "author", "downloads", "likes", "createdAt", "lastModified", "gated", "tags",
    "library_name", "pipeline_tag", "sha", "siblings", "gguf",
)  # fmt: skip
MAX_LIMIT = 1000  # the Hub's largest page
MIN_SCAN = 100  # candidates fetched when filters must be applied on our side
GGUF_TAG = "gguf"

_RETRY_STATUSES = {500, 502, 503, 504}
CACHE_TTL = 300.0  # seconds a search result or repo listing is reused
_search_cache: TTLCache = TTLCache(maxsize=256, ttl=CACHE_TTL)
_variants_cache: TTLCache = TTLCache(maxsize=1024, ttl=CACHE_TTL)
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class RemoteFile:
    """One file of a repo, as the Hub describes it."""

    path: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Variant:
    """One GGUF variant of a repo: a single file, or all shards of a split model."""

    repo_id: str
    filename: str  # the first shard: what llama.cpp loads
    quant: str | None
    param_size: str | None
    is_chat: bool
    files: tuple[RemoteFile, ...]

    @property
    def size(self) -> int | None:
        """Total bytes over all shards (``None`` when a size is unknown)."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]


def clear_cache() -> None:
    """Forget cached search results and repo listings."""
    with _cache_lock:
        _search_cache.clear()
        _variants_cache.clear()


# --- talking to the Hub -------------------------------------------------------------------


@contextmanager
def hub_errors(settings: Settings, what: str) -> Iterator[None]:
    """Turn ``huggingface_hub`` / transport errors into our named errors with a hint."""
    try:
        yield
    except hf_errors.GatedRepoError as exc:
        raise GatedRepoError(
            f"{what} is gated: you need to accept its terms and be logged in",
            hint="accept the terms on the repo page, then set HF_TOKEN or run `hf auth login`",
        ) from exc
    except hf_errors.RepositoryNotFoundError as exc:
        raise NotFoundError(
            f"{what} was not found on {settings.endpoint}",
            hint="check the spelling (owner/name); private repos need HF_TOKEN",
        ) from exc
    except hf_errors.RevisionNotFoundError as exc:
        raise NotFoundError(f"{what}: revision not found on {settings.endpoint}") from exc
    except hf_errors.EntryNotFoundError as exc:
        raise NotFoundError(f"{what}: file not found on {settings.endpoint}") from exc
    except hf_errors.OfflineModeIsEnabled as exc:
        raise _offline(what) from exc
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise GatedRepoError(
                f"{what}: access denied by {settings.endpoint} (HTTP {status})",
                hint="set HF_TOKEN or run `hf auth login` with an account that has access",
            ) from exc
        raise HubUnavailableError(
            f"{what}: the Hub answered HTTP {status}",
            hint="try again later, or set HF_ENDPOINT to a mirror",
        ) from exc
    except httpx2.TransportError as exc:
        kind = "timed out" if isinstance(exc, httpx2.TimeoutException) else "is unreachable"
        raise HubUnavailableError(
            f"The Hub at {settings.endpoint} {kind} ({type(exc).__name__})",
            hint="check your connection, set HF_ENDPOINT to a mirror, or HF_HUB_OFFLINE=1",
        ) from exc


def _offline(what: str) -> OfflineError:
    return OfflineError(
        f"Offline mode is on (HF_HUB_OFFLINE=1): {what} needs the Hub",
        hint="unset HF_HUB_OFFLINE to go online, or use local models (`offgrid list`)",
    )


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx2.TransportError):
        return True
    if isinstance(exc, hf_errors.HfHubHTTPError) and exc.response is not None:
        return exc.response.status_code in _RETRY_STATUSES
    return False


def _call(settings: Settings, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` with bounded exponential-backoff retries on transient errors."""
    if settings.offline:
        raise _offline(what)
    with hub_errors(settings, what):
        for attempt in range(settings.hub_retries + 1):
            try:
                return fn()
            except Exception as exc:
                if attempt == settings.hub_retries or not _is_transient(exc):
                    raise
                time.sleep(0.25 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _list_models(settings: Settings, params: dict[str, Any]) -> list[ModelInfo]:
    """One page of ``GET /api/models``, parsed by ``huggingface_hub``.

    ``HfApi.list_models`` cannot take a timeout (its shared client has none), so we make the
    same request through the same session, headers and error handling, with a timeout.
    """

    def fetch() -> list[ModelInfo]:
        response = get_session().get(
            f"{settings.endpoint}/api/models",
            params=params,
            headers=build_hf_headers(token=settings.token),
            timeout=settings.hub_timeout,
        )
        hf_raise_for_status(response)
        return [ModelInfo(**item) for item in response.json()]

    return _call(settings, "Searching the Hub", fetch)


def _model_info(settings: Settings, repo_id: str, revision: str | None) -> ModelInfo:
    api = HfApi(endpoint=settings.endpoint, token=settings.token)
    return _call(
        settings,
        f"Repository '{repo_id}'",
        lambda: api.model_info(
            repo_id, revision=revision, files_metadata=True, timeout=settings.hub_timeout
        ),
    )


# --- variants ------------------------------------------------------------------------------


def _repo_is_chat(info: ModelInfo) -> bool:
    chat_template = isinstance(info.gguf, dict) and bool(info.gguf.get("chat_template"))
    return chat_template or "conversational" in (info.tags or []) or names.is_chat_name(info.id)


def _format_params(total: Any) -> str | None:
    if not isinstance(total, int | float) or total <= 0:
        return None
    return f"{total / 1e9:.3g}B" if total >= 1e9 else f"{total / 1e6:.0f}M"


def group_variants(info: ModelInfo, files: Iterable[RemoteFile]) -> list[Variant]:
    """Group a repo's GGUF files into variants (shards of one model together), smallest first.

    Args:
        info: the repo's ``ModelInfo`` (id, tags and gguf metadata are used).
        files: the repo's files.

    Returns:
        One :class:`Variant` per model, sorted by size.
    """
    groups: dict[str, list[tuple[names.ParsedName, RemoteFile]]] = {}
    for remote in files:
        if names.is_model_file(remote.path):
            parsed = names.parse_filename(remote.path)
            groups.setdefault(parsed.variant, []).append((parsed, remote))
    repo_chat = _repo_is_chat(info)
    repo_params = names.parse_param_size(info.id) or _format_params(
        (info.gguf or {}).get("total") if isinstance(info.gguf, dict) else None
    )
    variants = []
    for members in groups.values():
        members.sort(key=lambda m: (m[0].shard or (1, 1))[0])
        first, _ = members[0]
        variants.append(
            Variant(
                repo_id=info.id,
                filename=first.filename,
                quant=first.quant,
                param_size=first.param_size or repo_params,
                is_chat=repo_chat or names.is_chat_name(first.filename),
                files=tuple(remote for _, remote in members),
            )
        )
    return sorted(variants, key=lambda v: (v.size is None, v.size or 0, v.filename))


def _remote_files(info: ModelInfo) -> list[RemoteFile]:
    return [
        RemoteFile(
            path=s.rfilename,
            size=s.size,
            sha256=s.lfs.sha256 if s.lfs is not None else None,
        )
        for s in info.siblings or []
    ]


def variants(
    repo_id: str, *, revision: str | None = None, settings: Settings | None = None
) -> list[Variant]:
    """The GGUF variants of ``repo_id`` with sizes and sha256 (one request, cached briefly).

    Raises:
        NotFoundError: no such repo or revision.
        GatedRepoError, HubUnavailableError, OfflineError: as the Hub answers.
    """
    settings = settings or get_settings()
    check_repo_id(repo_id)
    key = (settings.endpoint, settings.token, repo_id, revision)
    with _cache_lock:
        cached = _variants_cache.get(key)
    if cached is not None:
        return cached
    info = _model_info(settings, repo_id, revision)
    found = group_variants(info, _remote_files(info))
    with _cache_lock:
        _variants_cache[key] = found
    return found


def check_repo_id(repo_id: str) -> None:
    """Refuse what is no ``owner/name`` repo id.

    Raises:
        InvalidArgumentError: not two non-empty parts, or a ``.``/``..`` part.
    """
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise InvalidArgumentError(
            f"Invalid repository id: {repo_id!r}", hint="write it as owner/name"
        )


VARIANT_COLUMNS = [
    "repo_id", "filename", "quant", "size", "size_gb", "param_size", "is_chat",
    "n_shards", "shards", "sha256", "download_url",
]  # fmt: skip


def _variant_row(variant: Variant, endpoint: str) -> dict[str, Any]:
    return {
        "repo_id": variant.repo_id,
        "filename": variant.filename,
        "quant": variant.quant,
        "size": variant.size,
        "size_gb": None if variant.size is None else variant.size / 1e9,
        "param_size": variant.param_size,
        "is_chat": variant.is_chat,
        "n_shards": len(variant.files),
        "shards": [f.path for f in variant.files],
        "sha256": variant.files[0].sha256,
        "download_url": hf_hub_url(variant.repo_id, variant.filename, endpoint=endpoint),
    }


def repo_files(repo_id: str, *, revision: str | None = None) -> pd.DataFrame:
    """Every GGUF variant of a repo, one row each, smallest first.

    A split model (``name-00001-of-00003.gguf``) is one row whose ``size`` is the sum of its
    shards; files in subfolders count; README, imatrix and mmproj files are not variants.

    Args:
        repo_id: ``owner/name`` on the Hub.
        revision: a branch, tag or commit (default: the main branch).

    Returns:
        DataFrame with columns ``repo_id, filename, quant, size, size_gb, param_size, is_chat,
        n_shards, shards, sha256, download_url``.
    """
    settings = get_settings()
    rows = [_variant_row(v, settings.endpoint) for v in variants(repo_id, revision=revision)]
    return pd.DataFrame(rows, columns=VARIANT_COLUMNS)


def best_variant(candidates: Iterable[Variant]) -> Variant | None:
    """The variant to recommend: the best-ranked quantization (see ``names.QUANT_PREFERENCE``).

    Ties (several files of one quant) go to the smaller; unknown quants come last. Never
    "the first file".
    """
    ranked = sorted(candidates, key=lambda v: (names.quant_rank(v.quant), v.size or 0, v.filename))
    return ranked[0] if ranked else None


# --- scoring -------------------------------------------------------------------------------


def score(
    *,
    repo_id: str,
    downloads: int,
    likes: int,
    last_modified: datetime | None,
    gated: bool,
    query: str | None = None,
    now: datetime | None = None,
) -> float:
    """OffGrid LLM's relevance score.

    ``downloads/1000 + likes*10 + recency_bonus + query_bonus``, where the recency bonus is
    ``(6 - months_since_last_modified) * 50`` when under 6 months, the query bonus 200 when the
    query occurs in the repo id (case-insensitive); the whole is halved for gated repos.
    """
    value = downloads / 1000 + likes * 10
    if last_modified is not None:
        now = now or datetime.now(timezone.utc)
        if last_modified.tzinfo is None:
            last_modified = last_modified.replace(tzinfo=timezone.utc)
        months = (now - last_modified).total_seconds() / (30.44 * 86400)
        if months < 6:
            value += (6 - max(months, 0.0)) * 50
    if query and query.lower() in repo_id.lower():
        value += 200
    return value / 2 if gated else value


# --- search --------------------------------------------------------------------------------

SEARCH_COLUMNS = [
    "id", "author", "downloads", "likes", "created_at", "last_modified", "gated", "tags",
    "library_name", "pipeline_tag", "n_variants", "quants", "best_file", "best_quant",
    "best_size", "best_size_gb", "param_size", "is_chat", "score", "download_command",
    "variants",
]  # fmt: skip


@dataclass(frozen=True)
class _Query:
    query: str | None
    author: str | None
    quant: str | None
    sort: str
    limit: int
    include_gated: bool
    min_downloads: int
    max_size: int | None
    only_gguf: bool


def _normalise_sort(sort: str) -> str:
    key = SORTS.get(str(sort).strip().lower().replace("-", "_"))
    if key is None:
        key = SORTS.get(str(sort).strip().lower().replace("-", "").replace("_", ""))
    if key is None:
        valid = ", ".join(["downloads", "likes", "created", "modified", "relevance", "trending"])
        raise InvalidArgumentError(f"Invalid sort: {sort!r}", hint=f"use one of: {valid}")
    return key


def _is_gated(info: ModelInfo) -> bool:
    return info.gated not in (None, False, "false", "False")


def _passes_cheap_filters(info: ModelInfo, q: _Query) -> bool:
    """Filters answerable from the list call alone (no per-repo request)."""
    if not q.include_gated and _is_gated(info):
        return False
    if (info.downloads or 0) < q.min_downloads:
        return False
    if info.siblings is None:  # the endpoint did not expand file names: decide after the fetch
        return True
    files = [s.rfilename for s in info.siblings if names.is_model_file(s.rfilename)]
    if q.only_gguf and not files:
        return False
    if q.quant:
        return any(names.quant_matches(names.parse_quant(f), q.quant) for f in files)
    return True


def _keep(variant: Variant, q: _Query) -> bool:
    if q.quant and not names.quant_matches(variant.quant, q.quant):
        return False
    return q.max_size is None or (variant.size is not None and variant.size <= q.max_size)


def _row(info: ModelInfo, kept: list[Variant], q: _Query, endpoint: str) -> dict[str, Any]:
    best = best_variant(kept)
    gated = _is_gated(info)
    return {
        "id": info.id,
        "author": info.author or info.id.split("/")[0],
        "downloads": info.downloads or 0,
        "likes": info.likes or 0,
        "created_at": info.created_at,
        "last_modified": info.last_modified,
        "gated": gated,
        "tags": list(info.tags or []),
        "library_name": info.library_name,
        "pipeline_tag": info.pipeline_tag,
        "n_variants": len(kept),
        "quants": [v.quant or "?" for v in kept],
        **best_columns(info.id, best),
        "param_size": best.param_size if best else names.parse_param_size(info.id),
        "is_chat": best.is_chat if best else _repo_is_chat(info),
        "score": round(
            score(
                repo_id=info.id,
                downloads=info.downloads or 0,
                likes=info.likes or 0,
                last_modified=info.last_modified,
                gated=gated,
                query=q.query,
            ),
            2,
        ),
        "variants": [_variant_row(v, endpoint) for v in kept],
    }


def best_columns(repo_id: str, best: Variant | None) -> dict[str, Any]:
    """The search columns that describe a repo's recommended variant."""
    return {
        "best_file": best.filename if best else None,
        "best_quant": best.quant if best else None,
        "best_size": best.size if best else None,
        "best_size_gb": best.size / 1e9 if best and best.size is not None else None,
        "download_command": (
            f"offgrid download-hf {repo_id} --file {best.filename}" if best else None
        ),
    }


def _resolve(info: ModelInfo, q: _Query, settings: Settings) -> dict[str, Any] | None:
    """Fetch a candidate's files and apply the exact filters; ``None`` drops it."""
    try:
        found = variants(info.id, settings=settings)
    except (NotFoundError, GatedRepoError):  # vanished or locked since the list call
        return None
    kept = [v for v in found if _keep(v, q)]
    if q.only_gguf and not kept:
        return None
    if (q.quant or q.max_size is not None) and not kept:
        return None
    return _row(info, kept, q, settings.endpoint)


def _sort_key(q: _Query) -> tuple[str, bool]:
    column = {
        "downloads": "downloads",
        "likes": "likes",
        "createdAt": "created_at",
        "lastModified": "last_modified",
        "relevance": "score",
        "trendingScore": "downloads",  # not in our rows: keep the Hub's own order
    }[q.sort]
    return column, q.sort != "trendingScore"


def _run_search(q: _Query, settings: Settings) -> pd.DataFrame:
    needs_scan = bool(q.quant or q.max_size is not None or q.min_downloads or q.sort == "relevance")
    params: dict[str, Any] = {
        "limit": min(MAX_LIMIT, max(q.limit, MIN_SCAN)) if needs_scan else q.limit,
        "expand": list(LIST_EXPAND),
    }
    if q.sort != "relevance":
        params["sort"] = q.sort
        params["direction"] = -1
    else:
        params["sort"] = "downloads"
        params["direction"] = -1
    if q.query:
        params["search"] = q.query
    if q.author:
        params["author"] = q.author
    if q.only_gguf:
        params["filter"] = GGUF_TAG
    if not q.include_gated:
        params["gated"] = False

    listed = _list_models(settings, params)
    candidates = [info for info in listed if _passes_cheap_filters(info, q)]
    if q.sort == "relevance":
        candidates.sort(
            key=lambda i: (
                -score(
                    repo_id=i.id,
                    downloads=i.downloads or 0,
                    likes=i.likes or 0,
                    last_modified=i.last_modified,
                    gated=_is_gated(i),
                    query=q.query,
                )
            )
        )

    rows: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=settings.hub_workers) as pool:
        start = 0
        while len(rows) < q.limit and start < len(candidates):
            # Fetch just enough candidates concurrently to fill the page, in order.
            batch = candidates[start : start + max(q.limit - len(rows), settings.hub_workers)]
            start += len(batch)
            rows.extend(r for r in pool.map(lambda i: _resolve(i, q, settings), batch) if r)

    df = pd.DataFrame(rows[: q.limit], columns=SEARCH_COLUMNS)
    column, descending = _sort_key(q)
    if descending and not df.empty:
        df = df.sort_values(column, ascending=False, kind="stable", na_position="last")
    df = df.reset_index(drop=True)
    df.attrs.update(total=len(df), scanned=len(listed), query=asdict(q))
    return df


def search(
    query: str | None = None,
    *,
    author: str | None = None,
    quant: str | None = None,
    sort: str = "downloads",
    limit: int = 20,
    include_gated: bool = False,
    min_downloads: int = 0,
    max_size: int | str | None = None,
    only_gguf: bool = True,
) -> pd.DataFrame:
    """Search the Hub for GGUF models, one row per repo.

    Args:
        query: text to look for in repo ids.
        author: only repos of this user or organisation.
        quant: only repos with a variant of this quantization (e.g. ``Q4_K_M``); the variant
            columns then describe those variants only.
        sort: ``downloads``, ``likes``, ``created``, ``modified``, ``relevance`` (our score) or
            ``trending``; the Hub's spellings (``createdAt``, ``lastModified``...) work too.
        limit: at most this many rows (1 to 1000).
        include_gated: keep gated repos (excluded by default).
        min_downloads: drop repos with fewer downloads.
        max_size: only variants at most this big: bytes, or text such as ``"4GB"``.
        only_gguf: only repos that have GGUF files.

    Returns:
        DataFrame with columns ``id, author, downloads, likes, created_at, last_modified, gated,
        tags, library_name, pipeline_tag, n_variants, quants, best_file, best_quant, best_size,
        best_size_gb, param_size, is_chat, score, download_command, variants``;
        ``df.attrs["total"]`` is the number of rows, ``df.attrs["scanned"]`` how many repos
        the Hub's list call returned before our exact filters.

    Raises:
        InvalidArgumentError: a bad sort, limit, size or download count.
        HubUnavailableError, OfflineError, GatedRepoError: as the Hub answers.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgumentError(
            f"Invalid limit: {limit!r}", hint=f"use a whole number from 1 to {MAX_LIMIT}"
        )
    if isinstance(min_downloads, bool) or not isinstance(min_downloads, int) or min_downloads < 0:
        raise InvalidArgumentError(f"Invalid min_downloads: {min_downloads!r} (must be >= 0)")
    q = _Query(
        query=(query or "").strip() or None,
        author=(author or "").strip() or None,
        quant=(quant or "").strip() or None,
        sort=_normalise_sort(sort),
        limit=limit,
        include_gated=include_gated,
        min_downloads=min_downloads,
        max_size=None if max_size is None else parse_size(max_size),
        only_gguf=only_gguf,
    )
    settings = get_settings()
    key = (settings.endpoint, settings.token, q)
    with _cache_lock:
        cached = _search_cache.get(key)
    if cached is None:
        cached = _run_search(q, settings)
        with _cache_lock:
            _search_cache[key] = cached
    return cached.copy(deep=True)


__all__ = [
    "RemoteFile",
    "Variant",
    "best_variant",
    "clear_cache",
    "group_variants",
    "repo_files",
    "score",
    "search",
    "variants",
]
