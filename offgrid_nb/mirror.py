"""A read-only Hugging Face Hub over a local folder: our tests' Hub, and models shared on a LAN.

``ROOT/<org>/<repo>/<files...>`` is served through the endpoints ``huggingface_hub`` uses:
``GET /api/models``, ``GET /api/models/{repo}[/revision/{rev}]``,
``GET /api/models/{repo}/tree/{rev}[/{path}]`` and ``HEAD|GET /{repo}/resolve/{rev}/{path}``.
An optional ``ROOT/<org>/<repo>/repo.json`` holds metadata (``downloads``, ``likes``,
``trendingScore``, ``createdAt``, ``lastModified``, ``gated``, ``tags``, ``library_name``,
``pipeline_tag``, ``gguf``) and ``sha256`` (file -> hex) checksums advertised instead of hashing.
Dataset repos live in ``ROOT/datasets/<org>/<repo>/``, served through
``GET /api/datasets/{repo}[/revision/{rev}]`` and
``HEAD|GET /datasets/{repo}/resolve/{rev}/{path}``.
Hidden files and ``repo.json`` are not repo files. Every file is served as an LFS file: its ETag
is its sha256. Point clients at it with ``HF_ENDPOINT=<url>`` and ``HF_HUB_DISABLE_XET=1``.

A real link can be simulated on loopback: ``latency_ms`` before every answer, file bytes paced to
``rate_per_connection`` per response (HTTP/1.1 answers one request at a time per connection)
and to ``rate_total`` over all responses together.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from socket import socket
from stat import S_ISREG
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import platformdirs
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

from offgrid_nb.errors import InvalidArgumentError
from offgrid_nb.jsonfile import write_json

__all__ = ["MirrorRequest", "MirrorServer", "make_app", "serve"]

DATASETS = "datasets"  # the folder (and URL prefix) of dataset repos
PAGE_SIZE = 1000  # entries per page of /api/models and /tree (the Hub's size); then a Link header
CHUNK_SIZE = 1 << 20  # bytes per read when streaming or hashing a file
PACED_CHUNK = 256 << 10  # bytes per write when a rate is set (smooth enough at 1 MB/s and up)
HASH_CACHE_DIR = Path(platformdirs.user_cache_dir("offgrid_nb")) / "mirror"
HASH_CACHE_MIN_SIZE = 64 << 20  # sha256s of files at least this big are also kept on disk

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_TRUE = {"1", "true", "yes"}
_SORTS = {
    "downloads": "downloads",
    "likes": "likes",
    "createdAt": "createdAt",
    "created_at": "createdAt",
    "lastModified": "lastModified",
    "last_modified": "lastModified",
    "trendingScore": "trendingScore",
    "trending_score": "trendingScore",
}
# What GET /api/models returns per model when neither `expand` nor `full` is given.
_LIST_FIELDS = {
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
    "modelId",
}


@dataclass(frozen=True)
class _File:
    path: str  # relative to the repo, "/"-separated
    real: Path  # resolved location, inside ROOT
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Repo:
    id: str
    files: dict[str, _File]  # by path, sorted
    meta: dict[str, Any]  # repo.json, checked and completed by _load_meta
    commit: str

    def info(self) -> dict[str, Any]:
        """All the mirror knows, shaped as the Hub's model info (siblings: names only)."""
        meta = self.meta
        info = {
            "_id": hashlib.sha1(self.id.encode()).hexdigest()[:24],
            "id": self.id,
            "modelId": self.id,
            "author": self.id.split("/")[0],
            "sha": self.commit,
            "lastModified": meta["lastModified"],
            "createdAt": meta["createdAt"],
            "private": False,
            "gated": meta["gated"],
            "disabled": False,
            "downloads": meta["downloads"],
            "likes": meta["likes"],
            "trendingScore": meta["trendingScore"],
            "tags": meta["tags"],
            "library_name": meta["library_name"],
            "pipeline_tag": meta["pipeline_tag"],
            "gguf": meta["gguf"],
            "siblings": [{"rfilename": path} for path in self.files],
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        return {key: value for key, value in info.items() if value is not None}

    def tree(self, folder: str, recursive: bool) -> list[_File | str] | None:
        """Files and folder paths (str) in ``folder`` ("" is the root), sorted; None if none."""
        base = f"{folder}/" if folder else ""
        entries: dict[str, _File | str] = {}
        for f in self.files.values():
            if not f.path.startswith(base):
                continue
            parts = f.path[len(base) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                subfolder = base + "/".join(parts[:depth])
                entries.setdefault(subfolder, subfolder)
            if recursive or len(parts) == 1:
                entries[f.path] = f
        if folder and not entries:
            return None
        return [entries[path] for path in sorted(entries)]

    def folder_oid(self, folder: str) -> str:
        """A stable id for ``folder`` that changes when a file under it changes."""
        return _digest(f for f in self.files.values() if f.path.startswith(f"{folder}/"))


def _digest(files: Iterable[_File], extra: str = "") -> str:
    digest = hashlib.sha1(extra.encode())
    for f in files:
        digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()


def _scan(root: Path, repo_dir: Path, repo_id: str) -> _Repo:
    """Read a repo folder: its files (hidden ones and links leaving ROOT left out) and repo.json."""
    files: dict[str, _File] = {}
    for top, dirs, names in os.walk(repo_dir):  # does not follow links to folders
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            rel = Path(top, name).relative_to(repo_dir).as_posix()
            if name.startswith(".") or rel == "repo.json":
                continue
            real = Path(top, name).resolve()
            try:
                st = real.stat()
            except OSError:  # a dangling link, or removed meanwhile
                continue
            if real.is_relative_to(root) and S_ISREG(st.st_mode):
                files[rel] = _File(rel, real, st.st_size, st.st_mtime_ns)
    files = dict(sorted(files.items()))
    meta = _load_meta(repo_dir, list(files.values()))
    commit = _digest(files.values(), json.dumps(meta["sha256"], sort_keys=True))
    return _Repo(repo_id, files, meta, commit)


def _load_meta(repo_dir: Path, files: list[_File]) -> dict[str, Any]:
    """repo.json with defaults filled in; values of the wrong type are ignored."""
    raw: Any = {}
    path = repo_dir / "repo.json"
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _log.warning("ignoring %s: %s", path, exc)
    if not isinstance(raw, dict):
        raw = {}

    def number(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def text(key: str) -> str | None:
        value = raw.get(key)
        return value if isinstance(value, str) else None

    mtimes = [f.mtime_ns for f in files] or [repo_dir.stat().st_mtime_ns]
    gated, tags, gguf, sha256 = (raw.get(k) for k in ("gated", "tags", "gguf", "sha256"))
    library, pipeline = text("library_name"), text("pipeline_tag")
    tags = [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
    if any(f.path.lower().endswith(".gguf") for f in files):
        tags.append("gguf")
    sha256 = sha256 if isinstance(sha256, dict) else {}
    return {
        "downloads": number("downloads"),
        "likes": number("likes"),
        "trendingScore": number("trendingScore"),
        "createdAt": _iso(raw.get("createdAt"), min(mtimes)),
        "lastModified": _iso(raw.get("lastModified"), max(mtimes)),
        "gated": "auto" if gated is True else gated if gated in ("auto", "manual") else False,
        "tags": list(dict.fromkeys([*tags, *(t for t in (library, pipeline) if t)])),
        "library_name": library,
        "pipeline_tag": pipeline,
        "gguf": gguf if isinstance(gguf, dict) else None,
        "sha256": {
            name: value.lower()
            for name, value in sha256.items()
            if isinstance(value, str) and _HEX64.fullmatch(value.lower())
        },
    }


def _iso(value: object, default_ns: int) -> str:
    """``value`` (ISO 8601), else ``default_ns``, as the Hub writes dates: ``...T03:04:05.000Z``."""
    when = datetime.fromtimestamp(default_ns / 1e9, timezone.utc)
    if isinstance(value, str):
        try:  # Python 3.10 does not read a "Z" suffix
            when = datetime.fromisoformat(value.strip().removesuffix("Z").removesuffix("z"))
        except ValueError:
            _log.warning("ignoring date %r in repo.json", value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _pointer(sha256: str, size: int) -> tuple[str, int]:
    """Git blob id and size of the LFS pointer file the Hub would store for this content."""
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    pointer = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest(), len(pointer)


class _Stopped(Exception):
    """Hashing was abandoned because the mirror is stopping."""


class _Hasher:
    """sha256 of files, cached in memory by (path, size, mtime) and, for big files, on disk."""

    def __init__(self, cache_file: Path) -> None:
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="offgrid-mirror-hash")
        self.stopped = threading.Event()
        self._file = cache_file
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}
        self._known = self._load()

    @staticmethod
    def _key(f: _File) -> str:
        return f"{f.real}|{f.size}|{f.mtime_ns}"

    def cached(self, f: _File) -> str | None:
        """The sha256 of ``f`` if already known."""
        return self._known.get(self._key(f))

    def compute(self, f: _File) -> str:
        """The sha256 of ``f``; blocking, so run it in a thread. Concurrent calls hash once."""
        key = self._key(f)
        with self._lock:
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:
            if (known := self._known.get(key)) is not None:
                return known
            digest = hashlib.sha256()
            with open(f.real, "rb") as fh:
                while chunk := fh.read(CHUNK_SIZE):
                    if self.stopped.is_set():
                        raise _Stopped(str(f.real))
                    digest.update(chunk)
            with self._lock:
                self._known[key] = digest.hexdigest()
                if f.size >= HASH_CACHE_MIN_SIZE:
                    self._save(key, f"{f.real}|")
            return self._known[key]

    def close(self) -> None:
        """Abandon hashing in progress and queued."""
        self.stopped.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self._file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def _save(self, key: str, stale_prefix: str) -> None:
        """Add ``key`` to the cache file, dropping older entries of the same file (lock held)."""
        data = {k: v for k, v in self._load().items() if not k.startswith(stale_prefix)}
        data[key] = self._known[key]
        try:
            write_json(self._file, data, indent=0)
        except OSError as exc:
            _log.warning("cannot write %s: %s", self._file, exc)


@dataclass(frozen=True)
class MirrorRequest:
    """One answered request, as the mirror's request log keeps it."""

    method: str
    path: str  # with the query
    range: str | None  # the Range header
    status: int
    sent: int  # bytes of a file's body sent (0 for other requests)


class _Pace:
    """Spaces writes so that they average ``rate`` bytes per second (no credit for idle time)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0  # when the next write may start

    async def take(self, n_bytes: int) -> None:
        """Wait for this write's turn, then book ``n_bytes`` of the rate."""
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + n_bytes / self.rate
        if start > now:
            await asyncio.sleep(start - now)


@dataclass(frozen=True)
class _Link:
    """The link the mirror simulates: latency per request, rates per connection and in total."""

    latency: float = 0.0  # seconds
    rate_per_connection: float | None = None  # bytes per second
    rate_total: float | None = None


class _Mirror:
    """What the handlers share: the folder, access tokens, the link, counters, the request log
    and the hasher."""

    def __init__(
        self,
        root: Path,
        *,
        link: _Link,
        tokens: frozenset[str],
        stats: Counter[str],
        log: list[MirrorRequest] | None,
    ) -> None:
        self.root = root
        self.link = link
        self.total_pace = _Pace(link.rate_total) if link.rate_total else None
        self.tokens = tokens
        self.stats = stats
        self.log = log
        self.hasher = _Hasher(HASH_CACHE_DIR / "sha256.json")

    def paces(self) -> list[_Pace]:
        """What one response's file bytes wait for: its own rate, then the shared one."""
        own = [_Pace(self.link.rate_per_connection)] if self.link.rate_per_connection else []
        return own + ([self.total_pace] if self.total_pace else [])

    def repo(self, org: str, name: str, space: str = "") -> _Repo | None:
        """The repo ``org/name``, read now; None if there is none (or the name is not valid).
        ``space`` is ``"datasets"`` for a dataset repo."""
        if not (_NAME.fullmatch(org) and _NAME.fullmatch(name)):
            return None
        repo_dir = self.root / space / org / name
        if not repo_dir.is_dir() or not repo_dir.resolve().is_relative_to(self.root):
            return None
        return _scan(self.root, repo_dir, f"{org}/{name}")

    def repos(self) -> Iterator[_Repo]:
        """All repos, by id."""
        for org in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != DATASETS):
            for repo_dir in sorted(p for p in org.iterdir() if p.is_dir()):
                if (repo := self.repo(org.name, repo_dir.name)) is not None:
                    yield repo

    async def sha256s(self, repo: _Repo, files: Iterable[_File]) -> dict[str, str]:
        """sha256 by path: from repo.json, else cached, else hashed in worker threads."""
        shas: dict[str, str] = {}
        todo: list[_File] = []
        for f in files:
            sha = repo.meta["sha256"].get(f.path) or self.hasher.cached(f)
            if sha is None:
                todo.append(f)
            else:
                shas[f.path] = sha
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self.hasher.executor, self.hasher.compute, f) for f in todo]
        shas.update(zip([f.path for f in todo], await asyncio.gather(*jobs), strict=True))
        return shas

    def warm_up(self) -> None:
        """Hash every file not hashed yet, one by one (blocking), so first downloads start fast."""
        for repo in self.repos():
            for f in repo.files.values():
                if f.path in repo.meta["sha256"]:
                    continue
                try:
                    self.hasher.compute(f)
                except _Stopped:
                    return
                except OSError as exc:
                    _log.warning("cannot hash %s: %s", f.real, exc)


class _HubError(tornado.web.HTTPError):
    """An error answered as the Hub does: ``X-Error-Code``, ``X-Error-Message``, JSON ``error``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status)
        self.message = message
        self.headers = {"X-Error-Message": _header_safe(message), **(headers or {})}
        if code:
            self.headers["X-Error-Code"] = code


def _header_safe(text: str) -> str:
    """``text`` with anything but printable ASCII replaced, fit for a header value."""
    return re.sub(r"[^\x20-\x7e]", "?", text)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def _pick(info: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    keep = {"_id", "id", *fields}
    return {key: value for key, value in info.items() if key in keep}


class _Handler(tornado.web.RequestHandler):
    kind = "other"  # key in the request counter
    SUPPORTED_METHODS = ("GET",)  # type: ignore[assignment]  # others get 405
    space = ""  # "datasets" for the dataset routes
    sent = 0  # bytes of a file's body sent, for the request log

    @property
    def mirror(self) -> _Mirror:
        return self.settings["mirror"]

    async def prepare(self) -> None:
        self.mirror.stats[self.kind] += 1
        if self.mirror.link.latency > 0:
            await asyncio.sleep(self.mirror.link.latency)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, _HubError):
            message = error.message
            for name, value in error.headers.items():
                self.set_header(name, value)
        else:
            message = HTTPStatus(status_code).phrase
        self._json({"error": message})

    def _json(self, data: object) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(data))

    def _repo(self, org: str, name: str, rev: str | None, *, files: bool = False) -> _Repo:
        """The repo, or the Hub's RepoNotFound, GatedRepo (``files`` only) or RevisionNotFound."""
        repo = self.mirror.repo(org, name, self.space)
        if repo is None:
            raise _HubError(404, "Repository not found", "RepoNotFound")
        if files and repo.meta["gated"] and not self._authorized():
            if "Authorization" not in self.request.headers:
                message = (
                    f"Access to model {repo.id} is restricted. You must have access to it and "
                    "be authenticated to access it. Please log in."
                )
                raise _HubError(401, message, "GatedRepo")
            message = (
                f"Access to model {repo.id} is restricted and you are not in the authorized "
                "list. Ask the mirror's operator for a token."
            )
            raise _HubError(403, message, "GatedRepo")
        if rev is not None and rev not in ("main", repo.commit):
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo

    def _authorized(self) -> bool:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        given = token.strip().encode()
        return scheme.lower() == "bearer" and any(
            hmac.compare_digest(given, t.encode()) for t in self.mirror.tokens
        )

    def _int_arg(self, name: str, default: int, low: int = 0) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if value < low:
            raise _HubError(400, f"Invalid {name}: {raw!r}")
        return value

    def _page(self, items: list[_T], size: int) -> list[_T]:
        """The page of ``items`` at this request's ``cursor``; a ``Link`` header names the next."""
        start = self._int_arg("cursor", 0)
        end = start + size
        if end < len(items):
            query = parse_qsl(self.request.query, keep_blank_values=True)
            query = [(k, v) for k, v in query if k != "cursor"] + [("cursor", str(end))]
            url = f"{self.request.protocol}://{self.request.host}{self.request.path}"
            self.set_header("Link", f'<{url}?{urlencode(query)}>; rel="next"')
        return items[start:end]


class _List(_Handler):
    """``GET /api/models``: search, author, filter, gated, pipeline_tag, sort, limit, expand..."""

    kind = "list"

    def get(self) -> None:
        arg = self.get_query_argument
        search = arg("search", "").lower()
        author = arg("author", "").lower()
        filters = self.get_query_arguments("filter")
        pipeline = arg("pipeline_tag", None)
        gated = arg("gated", None)
        if gated is not None and gated.lower() not in ("true", "false"):
            raise _HubError(400, f"Invalid gated: {gated!r}")
        sort = _SORTS.get(arg("sort", "trendingScore"))
        if sort is None:
            raise _HubError(400, f"Invalid sort: {arg('sort')!r} (one of {', '.join(_SORTS)})")
        if arg("direction", "-1") != "-1":
            raise _HubError(400, "Only direction=-1 (descending) is supported")
        limit = min(self._int_arg("limit", PAGE_SIZE, low=1), PAGE_SIZE)
        expand = self.get_query_arguments("expand") + self.get_query_arguments("expand[]")

        infos = [
            info
            for info in (repo.info() for repo in self.mirror.repos())
            if search in info["id"].lower()
            and author in ("", info["author"].lower())
            and all(tag in info["tags"] for tag in filters)
            and pipeline in (None, info.get("pipeline_tag"))
            and (gated is None or bool(info["gated"]) == (gated.lower() == "true"))
        ]
        infos.sort(key=lambda info: info[sort], reverse=True)  # stable: ties stay by id
        fields = expand or (None if _flag(arg("full", None)) else _LIST_FIELDS)
        self._json([_pick(i, fields) if fields else i for i in self._page(infos, limit)])


class _Info(_Handler):
    """``GET /api/models/{repo}[/revision/{rev}]``; ``blobs=true`` adds sizes and LFS sha256s."""

    kind = "info"

    async def get(self, org: str, name: str, rev: str | None = None) -> None:
        repo = self._repo(org, name, rev)
        info = repo.info()
        if _flag(self.get_query_argument("blobs", None)):
            shas = await self.mirror.sha256s(repo, repo.files.values())
            info["siblings"] = []
            for f in repo.files.values():
                blob_id, pointer_size = _pointer(shas[f.path], f.size)
                lfs = {"sha256": shas[f.path], "size": f.size, "pointerSize": pointer_size}
                info["siblings"].append(
                    {"rfilename": f.path, "size": f.size, "blobId": blob_id, "lfs": lfs}
                )
        expand = self.get_query_arguments("expand") + self.get_query_arguments("expand[]")
        self._json(_pick(info, expand) if expand else info)


class _Tree(_Handler):
    """``GET /api/models/{repo}/tree/{rev}[/{path}]`` with ``recursive`` and ``expand``."""

    kind = "tree"

    async def get(self, org: str, name: str, rev: str, path: str | None = None) -> None:
        repo = self._repo(org, name, rev)
        recursive = _flag(self.get_query_argument("recursive", None))
        entries = repo.tree((path or "").strip("/"), recursive)
        if entries is None:
            raise _HubError(404, "Entry not found", "EntryNotFound")
        page = self._page(entries, PAGE_SIZE)
        shas = await self.mirror.sha256s(repo, (e for e in page if isinstance(e, _File)))
        expand = _flag(self.get_query_argument("expand", None))
        commit = {"id": repo.commit, "title": "Mirror snapshot", "date": repo.meta["lastModified"]}
        items = [_tree_item(repo, entry, shas) for entry in page]
        self._json([{**item, "lastCommit": commit} for item in items] if expand else items)


def _tree_item(repo: _Repo, entry: _File | str, shas: dict[str, str]) -> dict[str, Any]:
    """A /tree entry: a folder (str), or a file with its LFS pointer's git id and sha256."""
    if isinstance(entry, str):
        return {"type": "directory", "oid": repo.folder_oid(entry), "size": 0, "path": entry}
    sha = shas[entry.path]
    oid, pointer_size = _pointer(sha, entry.size)
    lfs = {"oid": sha, "size": entry.size, "pointerSize": pointer_size}
    return {"type": "file", "oid": oid, "size": entry.size, "path": entry.path, "lfs": lfs}


class _Resolve(_Handler):
    """``HEAD|GET /{repo}/resolve/{rev}/{path}``: the file, streamed, with Range support."""

    kind = "resolve"
    SUPPORTED_METHODS = ("GET", "HEAD")  # type: ignore[assignment]

    async def get(self, org: str, name: str, rev: str, path: str) -> None:
        repo = self._repo(org, name, rev, files=True)
        f = repo.files.get(path)
        if f is None:
            headers = {"X-Repo-Commit": repo.commit}
            raise _HubError(404, "Entry not found", "EntryNotFound", headers)
        sha = (await self.mirror.sha256s(repo, [f]))[f.path]
        start, end = _byte_range(self.request.headers.get("Range"), f.size) or (0, f.size)
        if (start, end) != (0, f.size):
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{f.size}")
        filename = f.path.rsplit("/", 1)[-1]
        plain_name = _header_safe(filename).replace('"', "_")
        self.set_header(
            "Content-Disposition",
            f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{plain_name}\";",
        )
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", end - start)
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("ETag", f'"{sha}"')
        self.set_header("X-Linked-Etag", f'"{sha}"')
        self.set_header("X-Linked-Size", f.size)
        self.set_header("X-Repo-Commit", repo.commit)
        if self.request.method == "HEAD":
            return
        paces = self.mirror.paces()
        step = PACED_CHUNK if paces else CHUNK_SIZE
        with open(f.real, "rb") as fh:
            fh.seek(start)
            while start < end and (chunk := fh.read(min(step, end - start))):
                for pace in paces:
                    await pace.take(len(chunk))
                start += len(chunk)
                self.write(chunk)
                try:
                    await self.flush()
                except StreamClosedError:  # the client went away
                    return
                self.sent += len(chunk)

    head = get


class _DatasetInfo(_Info):
    """``GET /api/datasets/{repo}[/revision/{rev}]``."""

    space = DATASETS


class _DatasetResolve(_Resolve):
    """``HEAD|GET /datasets/{repo}/resolve/{rev}/{path}``."""

    space = DATASETS


class _NotFound(_Handler):
    SUPPORTED_METHODS = tornado.web.RequestHandler.SUPPORTED_METHODS

    async def prepare(self) -> None:
        await super().prepare()
        raise _HubError(404, "Not Found")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end) of a single ``bytes=`` range, end excluded; None to send the whole file.

    Malformed and multi-range headers are ignored, as RFC 9110 allows; unsatisfiable ones get 416.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # the last N bytes
        start, end = max(size - int(last), 0), size
    elif last and int(last) < int(first):
        return None
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    if start >= end:
        headers = {"Content-Range": f"bytes */{size}"}
        raise _HubError(416, "Requested range not satisfiable", headers=headers)
    return start, end


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    request = handler.request
    log = handler.settings["mirror"].log
    if log is not None:
        sent = getattr(handler, "sent", 0)
        log.append(
            MirrorRequest(request.method, request.uri, request.headers.get("Range"), status, sent)
        )
    _log.log(
        logging.WARNING if status >= 500 else logging.DEBUG,
        "%d %s %s %.1fms",
        status,
        request.method,
        request.uri,
        1000 * request.request_time(),
    )


def make_app(
    root: str | Path,
    *,
    latency_ms: float = 0.0,
    rate_per_connection: float | None = None,
    rate_total: float | None = None,
    tokens: Iterable[str] = (),
    stats: Counter[str] | None = None,
    log: list[MirrorRequest] | None = None,
) -> tornado.web.Application:
    """The mirror of ``root`` as a Tornado application (not listening yet).

    Args:
        root: folder holding ``<org>/<repo>/<files>``.
        latency_ms: every request waits this long before it is answered (simulates a slow link).
        rate_per_connection: file bytes per second of one response (``None``: unlimited).
        rate_total: file bytes per second of all responses together (``None``: unlimited).
        tokens: bearer tokens that may download gated repos' files (a lone str is one token).
        stats: counts requests by kind: "list", "info", "tree", "resolve" and "other".
        log: every answered request is appended to it as a :class:`MirrorRequest`.

    Raises:
        InvalidArgumentError: ``root`` is not a folder, ``latency_ms`` is negative or a rate
            is not positive.
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        hint = "pass the folder that holds <org>/<repo>/ model folders"
        raise InvalidArgumentError(f"{folder} is not a directory", hint=hint)
    if not latency_ms >= 0:
        raise InvalidArgumentError(f"latency_ms must be >= 0, not {latency_ms}")
    for name, rate in (("rate_per_connection", rate_per_connection), ("rate_total", rate_total)):
        if rate is not None and not rate > 0:
            raise InvalidArgumentError(f"{name} must be more than 0 bytes/s, not {rate}")
    token_set = frozenset([tokens] if isinstance(tokens, str) else tokens) - {""}
    mirror = _Mirror(
        folder.resolve(),
        link=_Link(latency_ms / 1000, rate_per_connection, rate_total),
        tokens=token_set,
        stats=Counter() if stats is None else stats,
        log=log,
    )
    repo = r"/([^/]+)/([^/]+)"
    routes: list[tuple[str, type[tornado.web.RequestHandler]]] = [
        (r"/api/models/?", _List),
        (rf"/api/models{repo}(?:/revision/([^/]+))?/?", _Info),
        (rf"/api/models{repo}/tree/([^/]+)(?:/(.*))?", _Tree),
        (rf"/api/datasets{repo}(?:/revision/([^/]+))?/?", _DatasetInfo),
        (rf"/datasets{repo}/resolve/([^/]+)/(.+)", _DatasetResolve),
        (rf"{repo}/resolve/([^/]+)/(.+)", _Resolve),
    ]
    return tornado.web.Application(
        routes, default_handler_class=_NotFound, log_function=_log_request, mirror=mirror
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class MirrorServer:
    """A mirror served from a daemon thread: ``with MirrorServer(root) as hub: ... hub.url ...``.

    Binds loopback by default; ``port=0`` picks a free port. ``requests`` counts requests by kind
    ("list", "info", "tree", "resolve", "other"); ``log`` lists them (:class:`MirrorRequest`).
    The link options are :func:`make_app`'s. A stopped server cannot be started again.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        rate_per_connection: float | None = None,
        rate_total: float | None = None,
        tokens: Iterable[str] = (),
    ) -> None:
        self.requests: Counter[str] = Counter()
        self.log: list[MirrorRequest] = []
        self.app = make_app(
            root,
            latency_ms=latency_ms,
            rate_per_connection=rate_per_connection,
            rate_total=rate_total,
            tokens=tokens,
            stats=self.requests,
            log=self.log,
        )
        self.host = host
        self.port = port
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._stopped = False

    def start(self) -> MirrorServer:
        """Start serving (no-op if started); ``url`` is set when this returns."""
        if self._stopped:
            raise RuntimeError("a stopped MirrorServer cannot be restarted; create a new one")
        if self._thread is not None:
            return self
        sockets = bind_sockets(self.port, self.host)
        self.port = sockets[0].getsockname()[1]
        self.url = _url(self.host, self.port)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(sockets, ready),),
            name=f"offgrid-mirror-{self.port}",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("the mirror's server thread did not start")
        return self

    async def _serve(self, sockets: list[socket], ready: threading.Event) -> None:
        server = HTTPServer(self.app)
        server.add_sockets(sockets)
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        ready.set()
        try:
            await self._done.wait()
        finally:
            server.stop()
            await server.close_all_connections()

    def stop(self) -> None:
        """Stop serving and close open connections (idempotent)."""
        if self._thread is None or self._stopped:
            return
        self._stopped = True
        self.app.settings["mirror"].hasher.close()
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(timeout=10)

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    latency_ms: float = 0.0,
    rate_per_connection: float | None = None,
    rate_total: float | None = None,
) -> None:
    """Serve ``root`` as a Hub mirror until Ctrl+C (blocking); prints the HF_ENDPOINT to use.

    Files are hashed in the background from the start, so first downloads do not wait for it.
    The link options are :func:`make_app`'s.

    Raises:
        InvalidArgumentError: ``root`` is not a folder, a link option is out of range, or
            ``host:port`` cannot be listened on.
    """
    app = make_app(
        root,
        latency_ms=latency_ms,
        rate_per_connection=rate_per_connection,
        rate_total=rate_total,
    )
    mirror: _Mirror = app.settings["mirror"]
    if not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be between 0 and 65535, not {port}")
    try:
        sockets = bind_sockets(port, host)
    except OSError as exc:
        hint = "is another server using it? Pick another port"
        message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise InvalidArgumentError(message, hint=hint) from exc
    url = _url(host, sockets[0].getsockname()[1])
    print(f"Serving {mirror.root} as a Hub mirror on {url} (HF_ENDPOINT={url})", flush=True)

    async def main() -> None:
        server = HTTPServer(app)
        server.add_sockets(sockets)
        threading.Thread(target=mirror.warm_up, name="offgrid-mirror-warm-up", daemon=True).start()
        try:
            await asyncio.Event().wait()
        finally:
            mirror.hasher.close()
            server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
