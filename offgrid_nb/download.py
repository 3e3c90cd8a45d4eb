"""Downloads that survive: resumable across restarts, verified, atomic, one at a time.

How one file of a model is fetched (``final`` is ``<models_dir>/<org>/<repo>/<path in repo>``):

1. The model's lock (``<first file>.lock``, a :class:`filelock.FileLock`) is taken, so two
   processes never write the same bytes; the second one waits, or fails with a clear error.
2. The file is cut into parts (:func:`_parts`; a small file is one part) fetched with ``Range``
   over up to ``connections`` connections at once (by default as many as pay, :class:`_Ramp`),
   one thread each; a connection asks for its next part while the last bytes of its current
   one arrive (:class:`_Ahead`), and once none is left to start, an idle connection takes half
   of the part in flight with the most left (:func:`_split`). Every part is written in place
   (``os.pwrite``) into ``final.part``, created at the file's full size. ``final.part.json``
   records what the bytes are (the sha256 the Hub lists, the size, the server's ETag and
   commit) before the first byte, then which byte ranges are on disk, rewritten atomically every
   :data:`SAVE_INTERVAL` or :data:`SAVE_BYTES` while bytes arrive. A part whose connection fails
   or stalls (no byte for ``hub_timeout`` seconds) is asked again from where it stopped, with
   backoff.
3. After an interruption (even SIGKILL) the next call finds the partial, checks the sidecar
   against the Hub's listing and asks only for the missing ranges. Every response's ETag (commit
   when there is no ETag) must still be the sidecar's, so a file that changed on the Hub is
   never glued onto an old partial: the partial is discarded and the file fetched again over one
   connection, as it is when a server ignores ``Range`` (answers 200).
4. sha256 is computed over the gapless prefix as it grows (:class:`_PrefixHash`) and compared
   with the Hub's LFS sha256 once every byte is there. A mismatch discards the partial; a match
   renames it into place (``os.replace``). Nothing ever appears under the final name unverified.

The HTTP client, headers (token) and error mapping are ``huggingface_hub``'s, so a gated repo,
a mirror (``HF_ENDPOINT``) or a proxy behave exactly as with ``hf download``; only the bytes of
an HTTP/1.1 body over plain TCP (not TLS) are read off the socket itself
(:mod:`offgrid_nb.response_body`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Literal

import httpx2
from huggingface_hub import hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from . import names
from .config import Settings, get_settings
from .errors import (
    AmbiguousError,
    ChecksumMismatchError,
    DiskSpaceError,
    DownloadCancelledError,
    DownloadError,
    InvalidArgumentError,
    NotFoundError,
    OfflineError,
    UnsafePathError,
)
from .hub import RemoteFile, Variant, best_variant, hub_errors, variants
from .jsonfile import write_json
from .library import (
    PART_SUFFIX,
    SIDECAR_SUFFIX,
    StrPath,
    hash_file,
    is_safe_relative_path,
    model_lock,
    resolve_model,
    scan,
)
from .manifest import Manifest, ManifestFile
from .refs import parse_hub_ref
from .response_body import READ_SIZE, body_chunks, use_large_reads
from .sizes import format_size

PROGRESS_INTERVAL = 0.1  # seconds between "downloading" events: at most ~10 per second
SPEED_SMOOTHING = 0.3  # weight of the newest interval in the moving average of the speed
RETRY_DELAY = 0.5  # seconds before the first retry; doubled after each failure in a row
MAX_RETRY_DELAY = 8.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_CONNECTIONS = 64
RAMP_START = 2  # connections the adaptive default (_Ramp) starts with...
RAMP_CAP = 16  # ...and doubles up to
RAMP_INTERVAL = 0.2  # seconds of transfer each count is measured over
RAMP_GAIN = 1.1  # a doubling that raised the speed less than this (+10%) is undone
RAMP_CPU = 0.85  # of one core: the download's threads using more are the limit, not the link
RAMP_RECHECK = 3.0  # seconds a settled count below the cap stays before it is measured again
MIN_PART = 16 << 20  # bytes: no part is smaller, so a file under 16 MiB is one request
MAX_PART = 64 << 20  # nor bigger: the prefix hash trails the parts in flight by ~connections parts
PARTS_PER_CONNECTION = 4  # so parts in flight at the end (hashed after the last byte) are ~1/4
MIN_SPLIT = 2 << 20  # bytes: a part in flight with twice this left is halved for an idle connection
AHEAD_BYTES = 4 << 20  # bytes left of a part when its connection asks for the next (_Ahead)...
AHEAD_WAIT = 0.005  # ...if its own response took this long (s): a shorter wait is not worth it
SAVE_INTERVAL = 0.05  # seconds between sidecar rewrites while bytes arrive...
SAVE_BYTES = 8 << 20  # ...or sooner, after this many bytes: a kill loses at most about this much
HASH_BUDGET = 8 << 20  # bytes hashed between two sidecar rewrites, so neither waits long

Status = Literal["starting", "downloading", "verifying", "done"]


@dataclass(frozen=True)
class DownloadProgress:
    """One progress event. Byte counts cover the whole model (every shard).

    Attributes:
        repo_id: the repository.
        filename: the file being fetched now (a shard of a split model).
        bytes_done: bytes on disk so far, resumed ones included.
        total: bytes of the whole model, ``None`` when the Hub does not say.
        speed: bytes per second, smoothed (0 until measured); in the ``"done"`` event, the
            average over the whole call.
        eta: seconds left at that speed, ``None`` when unknown.
        status: ``"starting"``, ``"downloading"``, ``"verifying"`` or ``"done"``.
        file_index: 1-based index of ``filename`` among the model's files.
        n_files: number of files (shards) of the model.
        connections: connections fetching parts of ``filename`` at once.
    """

    repo_id: str
    filename: str
    bytes_done: int
    total: int | None
    speed: float
    eta: float | None
    status: Status
    file_index: int
    n_files: int
    connections: int = 1

    @property
    def fraction(self) -> float | None:
        """``bytes_done / total`` (0 to 1), ``None`` when the total is unknown."""
        return None if not self.total else min(self.bytes_done / self.total, 1.0)


ProgressCallback = Callable[[DownloadProgress], None]


class _Transient(Exception):
    """A failure worth retrying: connection reset, timeout, 5xx, a body cut short."""


class _Restart(Exception):
    """The partial cannot be continued (the file changed, Range is ignored): start it over."""


class _Stopped(Exception):
    """Another part failed or the download was cancelled: this part stops where it is."""


# --- choosing what to download ------------------------------------------------------------


def _choose(found: list[Variant], repo_id: str, file: str | None, quant: str | None) -> Variant:
    if file is not None and quant is not None:
        raise InvalidArgumentError("Give either a file or a quant, not both")
    if not found:
        raise NotFoundError(
            f"{repo_id} has no GGUF model files", hint="find a GGUF repo with `offgrid search`"
        )
    if file is not None:
        for variant in found:
            if file in (f.path for f in variant.files):
                return variant
        listing = ", ".join(v.filename for v in found)
        raise NotFoundError(f"{repo_id} has no model file {file!r}", hint=f"available: {listing}")
    if quant is None:
        return best_variant(found)  # type: ignore[return-value]  # found is not empty
    matches = [v for v in found if names.quant_matches(v.quant, quant)]
    if not matches:
        quants = ", ".join(dict.fromkeys(v.quant or v.filename for v in found))
        raise NotFoundError(f"{repo_id} has no {quant} variant", hint=f"available: {quants}")
    if len(matches) > 1:
        best = best_variant(matches)
        ranked = [best, *(v for v in matches if v is not best)]
        candidates = [v.filename for v in ranked]  # type: ignore[union-attr]
        raise AmbiguousError(
            f"{len(matches)} files of {repo_id} are {best.quant}: {', '.join(candidates)}",
            candidates=candidates,
            hint=f"pass the file to download; recommended: {candidates[0]}",
        )
    return matches[0]


def select_variant(
    repo_id: str, file: str | None = None, *, quant: str | None = None, revision: str | None = None
) -> Variant:
    """The variant :func:`download` would fetch.

    Args:
        repo_id: ``owner/name`` on the Hub.
        file: an exact path in the repo (any shard of a split model names the whole model).
        quant: a quantization such as ``Q4_K_M`` (any case).
        revision: a branch, tag or commit (default: the main branch).

    Returns:
        With ``file``: its variant; with ``quant``: the one variant of that quant; with neither:
        the recommended variant (:func:`offgrid_nb.hub.best_variant`).

    Raises:
        AmbiguousError: several variants have that quant; ``candidates`` lists them, the
            recommended one first.
        NotFoundError: no such repo, or no file / variant matches (the hint lists them).
        InvalidArgumentError: both ``file`` and ``quant`` given, or a bad repo id.
    """
    return _choose(variants(repo_id, revision=revision), repo_id, file, quant)


def _downloaded(root: Path, repo_id: str, file: str | None, quant: str | None) -> Path | None:
    """The one downloaded model of ``repo_id`` a call means, by the manifests (for offline use)."""
    found = [
        m.path
        for m in scan(root)
        if m.manifest is not None
        and m.manifest.repo_id == repo_id
        and (file is None or file in (f.path for f in m.manifest.files))
        and (quant is None or names.quant_matches(m.manifest.quant, quant))
    ]
    return found[0] if len(found) == 1 else None


def local_path(models_dir: Path, repo_id: str, path: str) -> Path:
    """Where a repo file lands: ``models_dir/<org>/<repo>/<path>``.

    Remote names are untrusted: absolute paths, drive letters, backslashes, ``.`` and ``..``
    parts and anything that would resolve (through links) outside the repo's folder are refused.

    Raises:
        UnsafePathError: the name would land outside the repo's folder.
    """
    folder = models_dir / repo_id
    target = folder.joinpath(*path.split("/"))
    if not is_safe_relative_path(path) or not target.resolve().is_relative_to(folder.resolve()):
        raise UnsafePathError(
            f"Refusing {repo_id}'s file name {path!r}: it would land outside {folder}",
            hint="the repository's file listing is malformed or malicious; report it",
        )
    return target


# --- progress ------------------------------------------------------------------------------


@dataclass
class _Tracker:
    """Turns byte counts into :class:`DownloadProgress` events, at most ~10 per second."""

    callback: ProgressCallback | None
    event: DownloadProgress
    finished: int = 0  # bytes of the files already complete
    received: int = 0  # bytes this call received over the network
    started: float = field(default_factory=time.monotonic)
    _mark: tuple[float, int] = field(default_factory=lambda: (time.monotonic(), 0))

    def advance(self, on_disk: int, *, received: int = 0, force: bool = False) -> None:
        """The current file now has ``on_disk`` bytes, ``received`` of them just arrived."""
        self.received += received
        now = time.monotonic()
        then, received_then = self._mark
        if not force and now - then < PROGRESS_INTERVAL:
            return
        speed = self.event.speed
        if now > then and self.received > received_then:
            latest = (self.received - received_then) / (now - then)
            weight = SPEED_SMOOTHING if speed else 1.0
            speed = weight * latest + (1 - weight) * speed
        self._mark = (now, self.received)
        done = self.finished + on_disk
        total = self.event.total
        eta = max(total - done, 0) / speed if total is not None and speed > 0 else None
        self.emit(bytes_done=done, speed=speed, eta=eta, status="downloading")

    def finish(self) -> None:
        """The "done" event; its speed is the average over the whole call."""
        elapsed = time.monotonic() - self.started
        speed = self.received / elapsed if self.received and elapsed > 0 else self.event.speed
        self.emit(bytes_done=self.finished, speed=speed, eta=0.0, status="done")

    def emit(self, **changes: object) -> None:
        """Send the current event with ``changes`` applied."""
        self.event = replace(self.event, **changes)  # type: ignore[arg-type]
        if self.callback is not None:
            self.callback(self.event)


# --- one file --------------------------------------------------------------------------------

Span = tuple[int, int]  # bytes [start, end) of a file


def _merged(spans: Iterable[Span]) -> list[Span]:
    """``spans`` sorted, touching and overlapping ones joined, empty ones dropped."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


@dataclass
class _Part:
    """Bytes still to fetch: ``start`` moves up as they arrive; ``end`` None: to the file's end."""

    start: int
    end: int | None


def _split(active: list[_Part]) -> _Part | None:
    """The second half of the part in ``active`` with the most bytes left (that part now ends
    there), ``None`` if none has twice :data:`MIN_SPLIT` left.

    So no connection idles while a slow one still has far to go: on a link that caps each
    connection, the last parts would otherwise end one by one at one connection's speed. The
    part's own request then stops at its new end; the halves are at least :data:`MIN_SPLIT`,
    more than one socket read, so its connection never writes past it.
    """
    known = [part for part in active if part.end is not None]
    if not known:
        return None
    part = max(known, key=lambda p: p.end - p.start)  # type: ignore[operator]
    left = part.end - part.start  # type: ignore[operator]
    if left < 2 * MIN_SPLIT:
        return None
    half = _Part(part.start + left // 2, part.end)
    part.end = half.start
    return half


class _Ahead:
    """The request for a connection's next part, sent from a helper thread while the last
    :data:`AHEAD_BYTES` of its current part arrive.

    HTTP/1.1 clients do not pipeline: without this a connection would wait a round trip (the
    link's latency, plus the server's time to first byte) between two parts, 30 ms of every
    0.7 s at 25 MB/s per connection. The response is opened on another connection of the pool;
    its body waits in the socket (TCP flow control) until the part's connection reads it. Only
    where a response took :data:`AHEAD_WAIT` or longer and while the download's threads leave a
    core idle: where the CPU is the limit a second request adds work and hides nothing.
    """

    def __init__(self, part: _Part, request: AbstractContextManager[httpx2.Response]) -> None:
        self.part = part
        self._request = request
        self._lock = threading.Lock()
        self._response: httpx2.Response | None = None
        self._error: BaseException | None = None
        self.waited = 0.0  # seconds until its headers were in
        self._abandoned = False
        self._ready = threading.Event()
        threading.Thread(target=self._send, name="offgrid-download-ahead", daemon=True).start()

    def _send(self) -> None:
        started = time.monotonic()
        try:
            response = self._request.__enter__()
            self.waited = time.monotonic() - started
        except BaseException as exc:  # raised again by opened(), in the part's thread
            self._error = exc
        else:
            with self._lock:
                keep = not self._abandoned
                if keep:
                    self._response = response
            if not keep:  # closed meanwhile: nobody will read it
                self._request.__exit__(None, None, None)
        finally:
            self._ready.set()

    @contextmanager
    def opened(self, stop: threading.Event) -> Iterator[httpx2.Response]:
        """The response once its headers are in (what sending it raised, raised here); closed
        after."""
        while not self._ready.wait(SAVE_INTERVAL):
            if stop.is_set():
                self.close()
                raise _Stopped
        if self._error is not None:
            raise self._error
        try:
            yield self._response  # type: ignore[misc]  # set when no error
        finally:
            self.close()

    def close(self) -> None:
        """Close the response, or have it closed as soon as its headers are in."""
        with self._lock:
            self._abandoned = True
            response, self._response = self._response, None
        if response is not None:
            self._request.__exit__(None, None, None)


def _is_ranged(part: _Part, size: int | None) -> bool:
    """Whether ``part`` is asked for with ``Range`` (anything but the whole file)."""
    return part.start > 0 or part.end != size


def _parts(have: list[Span], size: int | None, connections: int) -> list[_Part]:
    """What ``have`` misses of a file of ``size`` bytes, cut for ``connections`` connections.

    Over one connection, a part is a gap. Else a part is a :data:`PARTS_PER_CONNECTION` th of
    a connection's share, between :data:`MIN_PART` and :data:`MAX_PART` (the last one of a gap
    may be smaller): a small file is one request, a faster connection takes more parts, and the
    parts still in flight when the last byte arrives (not hashed yet) are a small share of it.
    """
    if size is None:  # unknown size: one stream, continued from its prefix
        return [_Part(have[0][1] if have and have[0][0] == 0 else 0, None)]
    gaps: list[Span] = []
    position = 0
    for start, end in [*have, (size, size)]:
        if start > position:
            gaps.append((position, start))
        position = max(position, end)
    missing = sum(end - start for start, end in gaps)
    share = -(-missing // (connections * PARTS_PER_CONNECTION))
    piece = missing if connections == 1 else min(max(share, MIN_PART), MAX_PART)  # 1: in order
    return [
        _Part(offset, min(offset + piece, end))
        for start, end in gaps
        for offset in range(start, end, piece)
    ]


class _Ramp:
    """How many connections fetch parts at once: ``start``, then, when ``cap`` is higher, as
    many as pay.

    Each count is measured over :data:`RAMP_INTERVAL` seconds from when all its connections
    deliver bytes; the first over half of it (it doubles unless the CPU is the limit, and it is
    where a link that takes more connections loses most). While the last doubling raised the
    speed by :data:`RAMP_GAIN` and the download's threads use less than :data:`RAMP_CPU` of one
    core (the HTTP client parses in Python: on a fast link the CPU, not the link, is the
    limit), the count doubles, up to ``cap``. A doubling that did not pay is undone, and the
    count then stays: a link capped per connection gets many, a total cap or a fast LAN few.
    A count below ``cap`` is measured again (and may double again) every
    :data:`RAMP_RECHECK` seconds: a link gets faster once a cold server or CDN edge warms up.
    """

    def __init__(self, cap: int, start: int = RAMP_START) -> None:
        self.cap = cap
        self.count = min(start, cap)
        self.settled = self.count >= cap
        self._before: tuple[int, float] | None = None  # (count, speed) before the last doubling
        self._mark: tuple[float, int, float] | None = None  # (time, bytes, CPU seconds) then
        self._settled_at = 0.0  # when the count last settled

    def observe(self, now: float, received: int, cpu: float, *, ready: bool = True) -> int:
        """The count to run, given the time, the bytes received and the CPU seconds used so
        far; ``ready``: every connection of the current count has delivered bytes."""
        if self.settled and self.count < self.cap and now - self._settled_at >= RAMP_RECHECK:
            self.settled, self._before, self._mark = False, None, None  # measure it again
        if self.settled or not ready:
            return self.count
        if self._mark is None:
            self._mark = (now, received, cpu)
            return self.count
        then, received_then, cpu_then = self._mark
        elapsed = now - then
        if elapsed < (RAMP_INTERVAL if self._before else RAMP_INTERVAL / 2):
            return self.count
        speed = (received - received_then) / elapsed
        busy = (cpu - cpu_then) / elapsed
        self._mark = None
        if self._before is not None and speed < self._before[1] * RAMP_GAIN:
            self.count, self.settled = self._before[0], True  # it did not pay: undo it
        elif busy >= RAMP_CPU or self.count >= self.cap:
            self.settled = True
        if self.settled:
            self._settled_at = now
        else:
            self._before = (self.count, speed)
            self.count = min(2 * self.count, self.cap)
        return self.count


if hasattr(os, "pwrite"):
    _pwrite = os.pwrite
else:  # pragma: no cover  # Windows: every attempt writes through its own descriptor

    def _pwrite(fd: int, data: memoryview, offset: int) -> int:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd``."""
    view = memoryview(data)
    while view:
        written = _pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class _PrefixHash:
    """sha256 of a partial from byte 0, fed as its gapless prefix grows.

    The connection whose part extends the prefix hashes each chunk it writes from its own buffer
    (:meth:`feed`); the bytes of parts that arrived ahead of the prefix are read back from the
    file (from the page cache: the prefix trails the parts in flight) by the download's thread
    (:meth:`update`) once the gap before them fills. ``hashlib`` and the reads release the GIL,
    so neither stops the other connections. Feeding skips the read-back (a copy of each byte):
    one connection on loopback used 1.35 instead of 1.48 CPU seconds per GB (a probe, medians
    of 6 alternating runs). Whichever thread gets there first hashes a byte; a lock keeps the
    two in order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.hashed = 0
        self._block = bytearray(READ_SIZE)
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()

    def feed(self, start: int, data: bytes | memoryview) -> None:
        """Hash ``data``, just written at ``start``, if the hash has reached ``start`` and no
        other thread is hashing (else the download's thread reads it back later)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self.hashed == start:
                self.hasher.update(data)
                self.hashed += len(data)
        finally:
            self._lock.release()

    def update(self, upto: int, budget: int | None = None) -> int:
        """Read back and hash the bytes before ``upto`` not hashed yet, at most ``budget``.

        Args:
            upto: the end of the gapless prefix on disk.
            budget: bytes to hash at most (``None``: all).

        Returns:
            How many bytes this call hashed.
        """
        done = 0
        view = memoryview(self._block)
        while budget is None or done < budget:
            with self._lock:  # a block at a time, so a connection's feed rarely finds it taken
                want = upto - self.hashed
                if budget is not None:
                    want = min(want, budget - done)
                if want <= 0:
                    break
                if self._file is None:
                    self._file = self.path.open("rb", buffering=0)
                self._file.seek(self.hashed)  # a feed may have moved the hash on
                n = self._file.readinto(view[: min(len(view), want)])
                if not n:  # shorter than the ranges on disk say: the size check will tell
                    break
                self.hasher.update(view[:n])
                self.hashed += n
                done += n
        return done

    def close(self) -> None:
        """Close the file (a partial can then be renamed or deleted, on Windows too)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclass
class _Partial:
    """The bytes of one file received so far (``<final>.part``) and what they are.

    Worker threads call :meth:`begin` and :meth:`add`; the rest runs in the download's thread.
    """

    final: Path
    remote: RemoteFile
    have: list[Span] = field(default_factory=list)  # byte ranges on disk, merged
    etag: str | None = None
    commit: str | None = None
    begun: bool = False  # the file and the sidecar naming its source exist
    received: int = 0  # bytes written by this call (never reset: it measures the speed)
    cpu: dict[threading.Thread, float] = field(default_factory=dict)  # each writer's CPU seconds
    unsaved: int = 0  # bytes written since the sidecar was
    wake: threading.Event = field(default_factory=threading.Event)  # set: save the sidecar now
    lock: threading.Lock = field(default_factory=threading.Lock)
    digest: _PrefixHash = field(init=False)

    def __post_init__(self) -> None:
        self.digest = _PrefixHash(self.path)

    @property
    def path(self) -> Path:
        return self.final.with_name(self.final.name + PART_SUFFIX)

    @property
    def sidecar(self) -> Path:
        return self.final.with_name(self.final.name + SIDECAR_SUFFIX)

    @property
    def done(self) -> int:
        """Bytes on disk."""
        return sum(end - start for start, end in self.have)

    @property
    def prefix(self) -> int:
        """Bytes on disk from byte 0 without a gap."""
        return self.have[0][1] if self.have and self.have[0][0] == 0 else 0

    @classmethod
    def load(cls, final: Path, remote: RemoteFile) -> _Partial:
        """Continue an earlier partial when its sidecar says it holds this file, else start over."""
        partial = cls(final, remote)
        try:
            saved = json.loads(partial.sidecar.read_text(encoding="utf-8"))
            on_disk = partial.path.stat().st_size
            # without "have", a partial of one connection (older versions): its bytes from 0
            spans = [(int(start), int(end)) for start, end in saved.get("have", [[0, on_disk]])]
            have = _merged((start, end) for start, end in spans if 0 <= start < end <= on_disk)
        except (OSError, ValueError, TypeError, AttributeError):
            saved, on_disk, have = {}, 0, []
        same = saved.get("sha256") == remote.sha256 and saved.get("size") == remote.size
        if not same or (remote.size is not None and on_disk > remote.size):
            partial.reset()
            return partial
        if remote.size is not None and on_disk < remote.size:
            os.truncate(partial.path, remote.size)
        partial.have, partial.begun = have, True
        partial.etag, partial.commit = saved.get("etag"), saved.get("commit")
        return partial

    def reset(self) -> None:
        """Discard the bytes and the sidecar: the next response starts a new partial."""
        self.digest.close()
        self.path.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.have, self.etag, self.commit, self.begun = [], None, None, False
        self.digest = _PrefixHash(self.path)

    def begin(self, etag: str | None, commit: str | None) -> bool:
        """Whether a response serves the bytes of this partial. The first response of a new
        partial records its source in the sidecar and creates the file at its full size."""
        with self.lock:
            if self.begun:
                return self.same_source(etag, commit)
            self.etag, self.commit = etag, commit
            with self.path.open("wb") as out:
                if self.remote.size:
                    out.truncate(self.remote.size)
            write_json(self.sidecar, self._meta())
            self.begun = True
            return True

    def add(self, start: int, length: int) -> None:
        """``length`` bytes from ``start`` are on disk now (written by the calling thread)."""
        with self.lock:
            self.cpu[threading.current_thread()] = time.thread_time()  # a new thread starts at 0
            self.have = _merged([*self.have, (start, start + length)])
            self.received += length
            self.unsaved += length
            if self.unsaved >= SAVE_BYTES:
                self.wake.set()

    def cpu_seconds(self) -> float:
        """CPU seconds used by the threads that wrote bytes, as of their latest chunk."""
        with self.lock:
            return sum(self.cpu.values())

    def save(self) -> None:
        """Rewrite the sidecar (atomically) with the ranges on disk now."""
        with self.lock:
            meta = self._meta() if self.begun else None
            self.unsaved = 0
        if meta is not None:
            write_json(self.sidecar, meta)

    def _meta(self) -> dict[str, object]:
        remote = self.remote
        have = [list(span) for span in self.have]
        return {
            "sha256": remote.sha256,
            "size": remote.size,
            "etag": self.etag,
            "commit": self.commit,
            "have": have,
        }

    def same_source(self, etag: str | None, commit: str | None) -> bool:
        """Whether a response serves the bytes this partial holds (ETag first, else commit)."""
        for saved, got in ((self.etag, etag), (self.commit, commit)):
            if saved and got:
                return saved == got
        return True


def _validator(response: httpx2.Response) -> tuple[str | None, str | None]:
    """(ETag, commit) as the Hub sent them: on its own response, before any CDN redirect."""
    hub = response.history[0] if response.history else response
    etag = hub.headers.get("X-Linked-Etag") or hub.headers.get("ETag")
    etag = etag.removeprefix("W/").strip('"') if etag else None
    return etag, hub.headers.get("X-Repo-Commit")


def _first_byte(response: httpx2.Response) -> int | None:
    """The first byte of ``Content-Range: bytes a-b/n``."""
    first = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("-")[0]
    return int(first) if first.isdigit() else None


def _raise_for_status(response: httpx2.Response) -> None:
    """Retryable statuses become :class:`_Transient`; other errors ``huggingface_hub``'s own."""
    if response.status_code < 400:
        return
    response.read()  # the error body, for huggingface_hub's message
    if response.status_code in RETRY_STATUSES:
        raise _Transient(f"HTTP {response.status_code}")
    hf_raise_for_status(response)


# --- a whole model ---------------------------------------------------------------------------


def _allocated(path: Path) -> int:
    """Bytes ``path`` takes on disk (a partial is created at full size, sparse until written)."""
    try:
        stat = path.stat()
    except OSError:
        return 0
    blocks = getattr(stat, "st_blocks", None)  # not on Windows
    return stat.st_size if blocks is None else min(stat.st_size, blocks * 512)


def _is_complete(final: Path, remote: RemoteFile, recorded: str | None) -> bool:
    """Whether ``final`` holds ``remote``: by its manifest entry, else by hashing it."""
    if not final.is_file() or (remote.size is not None and final.stat().st_size != remote.size):
        return False
    if recorded is not None:  # verified when it was downloaded; the Hub may have a newer one
        return recorded == (remote.sha256 or recorded)
    # e.g. copied in by hand: trust it only if its bytes are the Hub's
    return remote.sha256 is not None and hash_file(final).hexdigest() == remote.sha256


class _Download:
    """Fetches the files of one variant into place; the model's lock must be held."""

    def __init__(
        self,
        settings: Settings,
        variant: Variant,
        revision: str | None,
        finals: list[Path],
        tracker: _Tracker,
        cancel: threading.Event | None,
        connections: int | None,
    ) -> None:
        self.settings = settings
        self.connections = connections
        self.variant = variant
        self.revision = revision
        self.finals = finals
        self.tracker = tracker
        self.cancel = cancel
        self.headers = {**build_hf_headers(token=settings.token), "Accept-Encoding": "identity"}
        self.commit: str | None = None

    def check_cancel(self) -> None:
        """Raise :class:`DownloadCancelledError` when the caller's cancel event is set."""
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelledError(
                f"Download of {self.variant.filename} cancelled",
                hint="run the same command again to resume where it stopped",
            )

    def run(self) -> None:
        """Download what is missing, verify it, move it into place, update the manifest."""
        manifest = Manifest.load(self.finals[0])
        recorded = {f.path: f.sha256 for f in manifest.files} if manifest else {}
        self.commit = manifest.commit if manifest else None
        done: dict[str, ManifestFile] = {}
        todo: list[tuple[int, RemoteFile, Path]] = []
        files = zip(self.variant.files, self.finals, strict=True)
        for index, (remote, final) in enumerate(files, start=1):
            if _is_complete(final, remote, recorded.get(remote.path)):
                done[remote.path] = ManifestFile(remote.path, remote.sha256, final.stat().st_size)
            else:
                todo.append((index, remote, final))
        self.tracker.finished = sum(f.size or 0 for f in done.values())
        self.tracker.emit(bytes_done=self.tracker.finished, status="starting")
        self._check_disk_space(todo)
        for index, remote, final in todo:
            self.tracker.event = replace(self.tracker.event, filename=remote.path, file_index=index)
            done[remote.path] = self._fetch(remote, final)
            self.tracker.finished += remote.size or 0
            self._save_manifest(done)  # so finished shards are not re-hashed after a failure
        if not todo and recorded.keys() != done.keys():  # e.g. copied in by hand, now verified
            self._save_manifest(done)
        self.tracker.finish()

    def _check_disk_space(self, todo: list[tuple[int, RemoteFile, Path]]) -> None:
        folder = self.finals[0].parent
        needed = sum(
            (remote.size or 0) - _allocated(final.with_name(final.name + PART_SUFFIX))
            for _, remote, final in todo
        )
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise DiskSpaceError(
                f"Not enough disk space in {folder}: {self.variant.filename} needs "
                f"{format_size(needed)} more but only {format_size(free)} is free",
                hint="free some space, or set OFFGRID_MODELS_DIR to a folder on a bigger disk",
            )

    def _fetch(self, remote: RemoteFile, final: Path) -> ManifestFile:
        """One file: what is missing, over the connections, then verified into place."""
        partial = _Partial.load(final, remote)
        self.tracker.advance(partial.done, force=True)
        url = hf_hub_url(
            self.variant.repo_id,
            remote.path,
            revision=self.revision,
            endpoint=self.settings.endpoint,
        )
        connections = self.connections
        restarts = 0
        while True:
            try:
                self._fetch_parts(url, partial, connections)
                return self._verify(partial)
            except _Restart as exc:
                restarts += 1
                if restarts > self.settings.hub_retries:
                    raise self._gave_up(partial, restarts, exc) from exc
                partial.reset()
                connections = 1  # one stream from byte 0 cannot disagree with itself
            finally:
                partial.digest.close()

    def _fetch_parts(self, url: str, partial: _Partial, connections: int | None) -> None:
        """Fetch what ``partial`` misses, each part in its own thread, up to ``connections`` at
        once (``None``: as many as pay, :class:`_Ramp`). This thread meanwhile hashes the
        prefix, saves the sidecar, reports progress and starts more connections when the ramp
        says so. The first failure stops every part."""
        ramp = _Ramp(RAMP_CAP) if connections is None else _Ramp(connections, connections)
        parts = deque(_parts(partial.have, partial.remote.size, ramp.cap))
        active: list[_Part] = []  # parts being fetched (or done, with nothing left to split)
        taking = threading.Lock()
        stop = threading.Event()
        failures: list[BaseException] = []
        threads: list[threading.Thread] = []
        # set while the download's threads leave a core idle: then the link, not the CPU, is the
        # limit, and a request sent ahead (_Ahead) hides a round trip instead of adding work
        # (on loopback, where the CPU is the limit, it cost 5%: 780 against 825 MB/s)
        link_bound = threading.Event()

        def take(done: _Part | None) -> _Part | None:
            """The next part to fetch: from the queue, else half of one in flight."""
            with taking:
                if done is not None:
                    active.remove(done)
                part = parts.popleft() if parts else _split(active)
                if part is not None:
                    active.append(part)
                return part

        def reserve() -> _Part | None:
            """The next queued part, to ask for ahead: not in flight yet, so never split (its
            request's bytes beyond a cut would be thrown away)."""
            with taking:
                return parts.popleft() if parts else None

        def switch(done: _Part, following: _Part) -> None:
            """``done`` is in, ``following`` (reserved) in flight now."""
            with taking:
                active.remove(done)
                active.append(following)

        def work(index: int) -> None:
            part: _Part | None = None
            ahead: _Ahead | None = None

            def send_next() -> None:
                """Ask for the next queued part now: the current one is nearly in."""
                nonlocal ahead
                if (
                    ahead is None
                    and link_bound.is_set()
                    and not stop.is_set()
                    and index < ramp.count
                ):
                    following = reserve()
                    if following is not None:
                        ahead = _Ahead(following, self._request(url, partial, following))

            try:
                while not stop.is_set():
                    sent, ahead = ahead, None
                    if sent is not None:
                        switch(part, sent.part)  # type: ignore[arg-type]  # set with sent
                        part = sent.part
                    elif index >= ramp.count:  # the ramp undid it
                        return
                    else:
                        part = take(part)
                        if part is None:
                            return
                    self._fetch_part(url, partial, part, stop, sent, send_next)
            except _Stopped:
                pass
            except BaseException as exc:  # reported by the download's thread
                failures.append(exc)
                stop.set()
            finally:
                if ahead is not None:
                    ahead.close()
                partial.wake.set()

        n_parts = len(parts)

        def grow() -> None:
            """Start connections up to the ramp's count while parts are queued for them (again
            where the ramp undid one before: its thread ended after its part)."""
            for index in range(min(ramp.count, n_parts) if parts and not stop.is_set() else 0):
                if index < len(threads) and threads[index].is_alive():
                    continue
                name = f"offgrid-download-part-{index}"
                thread = threading.Thread(target=work, args=(index,), name=name, daemon=True)
                threads[index : index + 1] = [thread]  # a new index, or a finished thread's
                thread.start()
            running = max(min(ramp.count, len(threads)), 1)
            self.tracker.event = replace(self.tracker.event, connections=running)

        seen = partial.received
        mark = (time.monotonic(), partial.cpu_seconds() + time.thread_time())  # for link_bound
        try:
            grow()
            while any(thread.is_alive() for thread in threads):
                if not partial.digest.update(partial.prefix, HASH_BUDGET):
                    partial.wake.wait(SAVE_INTERVAL)
                partial.wake.clear()
                now, cpu = time.monotonic(), partial.cpu_seconds() + time.thread_time()
                if now - mark[0] >= RAMP_INTERVAL:  # this thread hashes: its CPU counts too
                    busy = (cpu - mark[1]) / (now - mark[0])
                    if busy < RAMP_CPU:
                        link_bound.set()
                    else:
                        link_bound.clear()
                    mark = (now, cpu)
                ready = all(thread in partial.cpu for thread in threads)
                ramp.observe(now, partial.received, cpu, ready=ready)
                grow()
                if partial.received != seen:
                    partial.save()
                    self.tracker.advance(partial.done, received=partial.received - seen)
                    seen = partial.received
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            partial.save()
        if failures:
            raise failures[0]

    def _fetch_part(
        self,
        url: str,
        partial: _Partial,
        part: _Part,
        stop: threading.Event,
        sent: _Ahead | None = None,
        near_end: Callable[[], None] | None = None,
    ) -> None:
        """One part, with bounded retries: a failure after some progress does not count.
        ``sent``: its request, sent ahead; ``near_end``: called once its last bytes are near."""
        failures = 0
        while True:
            before = part.start
            try:
                self._attempt(url, partial, part, stop, sent, near_end)
                return
            except (httpx2.TransportError, _Transient) as exc:
                failures = 1 if part.start > before else failures + 1
                if failures > self.settings.hub_retries:
                    raise self._gave_up(partial, failures, exc) from exc
                if stop.wait(min(RETRY_DELAY * 2 ** (failures - 1), MAX_RETRY_DELAY)):
                    raise _Stopped from exc
            finally:
                if sent is not None:  # closed once read; not if _attempt failed before that
                    sent.close()
                    sent = None  # a retry asks again

    def _request(
        self, url: str, partial: _Partial, part: _Part
    ) -> AbstractContextManager[httpx2.Response]:
        """The GET of the rest of ``part`` (a ``Range`` unless it is the whole file), to send."""
        size = partial.remote.size
        headers = dict(self.headers)
        if _is_ranged(part, size):
            last = "" if part.end in (None, size) else part.end - 1  # type: ignore[operator]
            headers["Range"] = f"bytes={part.start}-{last}"
        timeout = self.settings.hub_timeout
        return get_session().stream("GET", url, headers=headers, timeout=timeout)

    def _attempt(
        self,
        url: str,
        partial: _Partial,
        part: _Part,
        stop: threading.Event,
        sent: _Ahead | None,
        near_end: Callable[[], None] | None,
    ) -> None:
        """One GET of the rest of ``part`` (``sent``: its request, sent ahead); a stall (no byte
        for ``hub_timeout``) is a timeout. ``near_end``: as for :meth:`_receive`, where a
        response takes :data:`AHEAD_WAIT` or longer."""
        self.check_cancel()
        size = partial.remote.size
        ranged = _is_ranged(part, size)  # as _request asked
        started = time.monotonic()
        with sent.opened(stop) if sent else self._request(url, partial, part) as response:
            waited = sent.waited if sent else time.monotonic() - started
            if waited < AHEAD_WAIT:
                near_end = None
            if response.status_code == 416:
                raise _Restart("the server's file is shorter than the Hub lists")
            _raise_for_status(response)
            etag, commit = _validator(response)
            self.commit = commit or self.commit
            if ranged and (response.status_code != 206 or _first_byte(response) != part.start):
                raise _Restart("the server ignores Range")  # 200: the whole file
            if not partial.begin(etag, commit):
                raise _Restart("the file changed on the Hub")  # never glue old and new bytes
            self._receive(response, partial, part, stop, near_end)
        if part.end is not None and part.start < part.end:
            raise _Transient(f"connection closed at byte {part.start} of {size}")

    def _receive(
        self,
        response: httpx2.Response,
        partial: _Partial,
        part: _Part,
        stop: threading.Event,
        near_end: Callable[[], None] | None,
    ) -> None:
        """Write the body in place from ``part.start``, never past ``part.end``; call
        ``near_end`` once :data:`AHEAD_BYTES` (at most a quarter of what was left) or fewer are
        left."""
        timeout = self.settings.hub_timeout
        left = None if part.end is None else part.end - part.start
        ahead_at = -1 if left is None or near_end is None else min(AHEAD_BYTES, left // 4)
        try:
            fd = os.open(partial.path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
            try:
                for chunk in body_chunks(response, bytearray(READ_SIZE), timeout):
                    if part.end is not None:
                        chunk = chunk[: part.end - part.start]
                        if not chunk:  # more than asked for
                            break
                    _write_at(fd, chunk, part.start)
                    partial.digest.feed(part.start, chunk)  # before add: update may not read it
                    partial.add(part.start, len(chunk))
                    part.start += len(chunk)
                    self.check_cancel()
                    if stop.is_set():
                        raise _Stopped
                    if part.end is not None and part.end - part.start <= ahead_at:
                        near_end()  # type: ignore[misc]  # set where ahead_at >= 0
                        ahead_at = -1
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise DiskSpaceError(
                f"The disk holding {partial.final.parent} is full",
                hint=f"free some space and run the same command again to resume from "
                f"{format_size(partial.done)}",
            ) from exc

    def _verify(self, partial: _Partial) -> ManifestFile:
        """Hash what is left, compare with the Hub's sha256, then move the file into place."""
        self.tracker.emit(status="verifying")
        if not partial.begun:  # an empty file: no part to fetch
            partial.begin(None, None)
        partial.digest.update(partial.prefix)
        partial.digest.close()
        remote = partial.remote
        size = partial.prefix
        hexdigest = partial.digest.hasher.hexdigest()
        wrong_size = partial.done != size or (remote.size is not None and size != remote.size)
        if wrong_size or (remote.sha256 is not None and hexdigest != remote.sha256.lower()):
            partial.reset()
            raise ChecksumMismatchError(
                f"{remote.path} of {self.variant.repo_id} failed verification: got sha256 "
                f"{hexdigest} ({size} bytes), the Hub lists {remote.sha256} "
                f"({remote.size} bytes)",
                hint="the bad bytes were discarded; run the command again, and if it fails "
                "again the server is sending a different file than it lists",
            )
        os.replace(partial.path, partial.final)
        partial.sidecar.unlink(missing_ok=True)
        return ManifestFile(remote.path, hexdigest, size)

    def _gave_up(self, partial: _Partial, failures: int, exc: Exception) -> DownloadError:
        reason = str(exc) or type(exc).__name__
        return DownloadError(
            f"Downloading {partial.remote.path} of {self.variant.repo_id} failed {failures} "
            f"times in a row ({reason})",
            hint=f"run the same command again to resume from {format_size(partial.done)}",
        )

    def _save_manifest(self, done: dict[str, ManifestFile]) -> None:
        variant = self.variant
        Manifest(
            repo_id=variant.repo_id,
            revision=self.revision or "main",
            commit=self.commit,
            filename=variant.filename,
            files=tuple(done[f.path] for f in variant.files if f.path in done),  # shard order
            quant=variant.quant,
            param_size=variant.param_size,
            downloaded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ).save(self.finals[0])


def check_connections(connections: int) -> int:
    """``connections`` if :func:`download` accepts it (a whole number from 1 to 64).

    Raises:
        InvalidArgumentError: it is not.
    """
    if isinstance(connections, bool) or not isinstance(connections, int):
        raise InvalidArgumentError(f"connections must be a whole number, not {connections!r}")
    if not 1 <= connections <= MAX_CONNECTIONS:
        raise InvalidArgumentError(
            f"connections must be between 1 and {MAX_CONNECTIONS}, not {connections}",
            hint="or leave it unset: the default starts with 2 and adds connections while "
            "they raise the speed",
        )
    return connections


def download(
    repo_id: str,
    file: str | None = None,
    *,
    quant: str | None = None,
    models_dir: StrPath | None = None,
    progress: ProgressCallback | None = None,
    revision: str | None = None,
    cancel: threading.Event | None = None,
    lock_timeout: float | None = None,
    connections: int | None = None,
) -> Path:
    """Download a GGUF model into the models folder: resumable, verified, atomic.

    A model already in place (and verified) is returned without downloading anything, also in
    offline mode (``HF_HUB_OFFLINE=1``) when the local manifests say which model is meant. An
    interrupted download (error, Ctrl+C, crash, cancel) resumes where it stopped on the next
    call, in this process or another.

    Args:
        repo_id: ``owner/name`` on the Hub.
        file: an exact path in the repo (for a split model, any of its shards).
        quant: a quantization such as ``Q4_K_M``; with neither, the recommended variant.
        models_dir: where models live (default: ``OFFGRID_MODELS_DIR``, else the user data dir).
        progress: called with :class:`DownloadProgress` events (throttled to ~10 per second;
            ``"done"`` always comes last).
        revision: a branch, tag or commit (default: the main branch).
        cancel: set this event (e.g. from another thread) to stop; the partial file is kept.
        lock_timeout: seconds to wait while another process downloads the same model; ``None``
            waits as long as it takes, ``0`` fails at once.
        connections: parts of a file fetched at once, 1 to 64 (default: the
            ``download_connections`` setting, ``OFFGRID_DOWNLOAD_CONNECTIONS``; unset, 2 at
            first, doubled up to 16 while that raises the speed by 10% and the download uses
            less than 0.85 of a CPU core); a file under 16 MiB is always one request.

    Returns:
        The local path of the model (shard 1 of a split model, which is what llama.cpp loads).

    Raises:
        AmbiguousError: several files match ``quant``; ``candidates`` lists them.
        InvalidArgumentError: ``connections`` is not between 1 and 64.
        NotFoundError: no such repo, revision, file or quant.
        GatedRepoError: the repo needs accepted terms and a token (``HF_TOKEN``,
            ``hf auth login``).
        UnsafePathError: a remote file name would land outside the models folder.
        DiskSpaceError: not enough free space (checked before the first byte).
        AlreadyDownloadingError: another process still holds the download after
            ``lock_timeout``.
        ChecksumMismatchError: the bytes do not match the Hub's sha256 (they are discarded).
        DownloadError: the connection kept failing; running again resumes.
        DownloadCancelledError: ``cancel`` was set.
        OfflineError, HubUnavailableError: as for every Hub call.
    """
    settings = get_settings()
    if connections is None:
        connections = settings.download_connections
    if connections is not None:
        check_connections(connections)
    use_large_reads()
    root = Path(models_dir).expanduser() if models_dir else settings.models_dir
    try:
        found = variants(repo_id, revision=revision, settings=settings)
    except OfflineError:
        local = _downloaded(root, repo_id, file, quant)
        if local is None:
            raise
        return local
    variant = _choose(found, repo_id, file, quant)
    finals = [local_path(root, repo_id, remote.path) for remote in variant.files]
    for folder in dict.fromkeys(final.parent for final in finals):
        folder.mkdir(parents=True, exist_ok=True)
    first = DownloadProgress(
        repo_id=repo_id,
        filename=variant.filename,
        bytes_done=0,
        total=variant.size,
        speed=0.0,
        eta=None,
        status="starting",
        file_index=1,
        n_files=len(variant.files),
    )
    tracker = _Tracker(progress, first)
    job = _Download(settings, variant, revision, finals, tracker, cancel, connections)
    with (
        model_lock(finals[0], timeout=lock_timeout, cancelled=job.check_cancel),
        hub_errors(settings, f"Repository '{repo_id}'"),
    ):
        job.run()
    return finals[0]


def pull_model(
    name: StrPath,
    *,
    progress: ProgressCallback | None = None,
    models_dir: StrPath | None = None,
) -> Path:
    """The local file of ``name``; a Hub reference that is not here yet is downloaded first,
    as ``ollama run`` does.

    Args:
        name: anything :func:`offgrid_nb.library.resolve_model` accepts; ``owner/repo:QUANT``,
            ``hf.co/owner/repo:QUANT``, ``owner/repo/file.gguf`` or ``owner/repo`` (the
            recommended variant) are fetched when no local model matches.
        progress: called with :class:`DownloadProgress` events while downloading.
        models_dir: our models folder (default: the configured one).

    Returns:
        The file to load (shard 1 of a split model).

    Raises:
        NotFoundError: no local model matches and it is not a Hub reference, or the Hub has
            no such repo or variant.
        AmbiguousError: several local models match.
        OfflineError, DownloadError...: as :func:`download`.
    """
    try:
        return resolve_model(name, models_dir)
    except NotFoundError:
        ref = parse_hub_ref(str(name))
        if ref is None:
            raise
    return download(
        ref.repo_id, ref.file, quant=ref.quant, models_dir=models_dir, progress=progress
    )


__all__ = [
    "DownloadProgress",
    "ProgressCallback",
    "check_connections",
    "download",
    "local_path",
    "pull_model",
    "select_variant",
]
