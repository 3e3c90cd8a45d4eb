"""offgrid_nb.download: choice of file, resume, verification, locking, faults.

Happy paths and Hub behaviour (gated repos, split models, tampered checksums, a SIGKILL on a
rate-limited link) go through our mirror and the real ``huggingface_hub`` client. Faults the
mirror does not simulate (a dropped or stalled connection, an ignored Range, 5xx, a tampered
byte, a malicious listing) come from ``FaultyHub`` below, a small Hub-shaped server whose
misbehaviour each test switches on. Tests of parts make parts small (``small_parts``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

import offgrid_nb
from offgrid_nb import clear_cache
from offgrid_nb.config import settings_override
from offgrid_nb.errors import (
    AlreadyDownloadingError,
    AmbiguousError,
    ChecksumMismatchError,
    DiskSpaceError,
    DownloadCancelledError,
    DownloadError,
    GatedRepoError,
    InvalidArgumentError,
    NotFoundError,
    OfflineError,
    UnsafePathError,
)
from offgrid_nb.library import Manifest
from offgrid_nb.mirror import MirrorServer

# The module, even where the package exports the function under the same name.
dl = importlib.import_module("offgrid_nb.download")

REPO = "faulty/tiny-GGUF"
FILE = "tiny-1B-Q4_K_M.gguf"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Partial files and their sidecars under ``folder`` (a finished download leaves none)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".part", ".part.json")))


def on_disk(final: Path) -> list[tuple[int, int]]:
    """The byte ranges of ``final``'s partial that its sidecar says are on disk."""
    sidecar = final.with_name(final.name + ".part.json")
    return [tuple(span) for span in json.loads(sidecar.read_text())["have"]]


def gaps(have: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """What ``have`` misses of ``size`` bytes."""
    edges = [0, *(x for span in have for x in span), size]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if a < b]


def asked(ranges: list[str | None], size: int) -> list[tuple[int, int]]:
    """The byte spans ``Range`` headers asked for (``None``: the whole file)."""
    spans = []
    for header in ranges:
        first, last = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "bytes=0-").groups()
        spans.append((int(first), int(last) + 1 if last else size))
    return spans


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "RETRY_DELAY", 0.01)


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    """Parts of at least 256 KiB (not 16 MiB), so a 1 MiB file is 4 parts."""
    monkeypatch.setattr(dl, "MIN_PART", 256 * 1024)
    return 256 * 1024


# --- a Hub that misbehaves on request --------------------------------------------------------


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    sent: int = 0  # body bytes written


@dataclass
class Faults:
    drop_at: int | None = None  # close a connection sending this file offset when it gets there
    drops: int = 0  # ...this many times
    stall_at: int | None = None  # stop sending for `stall_for` seconds at this offset...
    stalls: int = 0  # ...this many times
    stall_for: float = 3.0
    corrupt_at: int | None = None  # send this byte of the file flipped
    ignore_range: bool = False  # answer 200 with the whole file even when asked for a range
    fail_first: int = 0  # answer 503 to this many file requests
    rate: float | None = None  # bytes per second
    etag: str | None = None  # send this ETag instead of the sha256
    latency: float = 0.0  # seconds before answering a file request


@dataclass
class FaultyHub:
    """A Hub (listing + resolve) for one repo, over ``files``, with switchable faults."""

    files: dict[str, bytes]
    faults: Faults = field(default_factory=Faults)
    requests: list[Request] = field(default_factory=list)
    sending: int = 0  # file bodies being sent now...
    most_sending: int = 0  # ...and the most at once

    def file_requests(self) -> list[Request]:
        return [r for r in self.requests if "/resolve/" in r.path]

    def listing(self) -> dict:
        siblings = []
        for path, data in self.files.items():
            lfs = {"sha256": sha256(data), "size": len(data), "pointerSize": 134}
            siblings.append({"rfilename": path, "size": len(data), "lfs": lfs})
        return {"id": REPO, "sha": "c" * 40, "tags": ["gguf"], "siblings": siblings}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        hub = self.server.hub
        if self.path.startswith(f"/api/models/{REPO}"):
            body = json.dumps(hub.listing()).encode()
            hub.requests.append(Request(self.path, None, 200, len(body)))
            self._headers(200, len(body), {"Content-Type": "application/json"})
            self.wfile.write(body)
            return
        prefix = f"/{REPO}/resolve/"
        name = unquote(self.path[len(prefix) :].split("/", 1)[1])
        request = Request(self.path, self.headers.get("Range"), 200)
        hub.requests.append(request)
        faults = hub.faults
        time.sleep(faults.latency)
        if faults.fail_first > 0:
            faults.fail_first -= 1
            request.status = 503
            self._headers(503, 0)
            return
        data = hub.files[name]
        if faults.corrupt_at is not None:
            data = bytearray(data)
            data[faults.corrupt_at] ^= 0xFF
        start, end = 0, len(data)
        if request.range and not faults.ignore_range:
            first, last = re.fullmatch(r"bytes=(\d+)-(\d*)", request.range).groups()
            start, end = int(first), min(int(last) + 1 if last else end, end)
            if start >= len(data):
                request.status = 416
                self._headers(416, 0, {"Content-Range": f"bytes */{len(data)}"})
                return
            request.status = 206
        extra = {"ETag": f'"{faults.etag or sha256(hub.files[name])}"', "X-Repo-Commit": "c" * 40}
        if request.status == 206:
            extra["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        self._headers(request.status, end - start, extra)
        self._send(bytes(data), start, end, request)

    def _send(self, data: bytes, start: int, end: int, request: Request) -> None:
        hub = self.server.hub
        with self.server.lock:
            hub.sending += 1
            hub.most_sending = max(hub.most_sending, hub.sending)
        try:
            self._send_body(data, start, end, request)
        finally:
            with self.server.lock:
                hub.sending -= 1

    def _send_body(self, data: bytes, start: int, end: int, request: Request) -> None:
        faults = self.server.hub.faults
        stall = None
        with self.server.lock:  # one request takes each fault
            if faults.drops and faults.drop_at is not None and start <= faults.drop_at < end:
                faults.drops -= 1
                end = faults.drop_at  # at the drop point itself: drop before the first byte
                self.close_connection = True
            if faults.stalls and faults.stall_at is not None and start <= faults.stall_at < end:
                faults.stalls -= 1
                stall = faults.stall_at
        step = 32 * 1024
        try:
            for offset in range(start, end, step):
                piece = data[offset : min(offset + step, end, stall if stall else end)]
                if faults.rate:  # before the write: the last byte ends the response
                    time.sleep(len(piece) / faults.rate)
                self.wfile.write(piece)
                request.sent += len(piece)
                if offset + len(piece) == stall:
                    self.wfile.flush()
                    time.sleep(faults.stall_for)  # the client gives up meanwhile
                    self.close_connection = True
                    return
        except OSError:  # the client went away
            self.close_connection = True

    def _headers(self, status: int, length: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: FaultyHub
    lock = threading.Lock()


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FaultyHub]:
    """A FaultyHub serving a 1 MiB ``FILE``; offgrid_nb points at it."""
    hub = FaultyHub({FILE: os.urandom(1 << 20)})
    server = _Server(("127.0.0.1", 0), _Handler)
    server.hub = hub
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    clear_cache()
    yield hub
    server.shutdown()
    server.server_close()


def target(tmp_path: Path, name: str = FILE) -> Path:
    return tmp_path / "models" / REPO / name


# --- choosing the file ------------------------------------------------------------------------


def test_downloads_the_recommended_variant_verified_with_manifest(hub, hub_root, tmp_path):
    events = []
    path = dl.download("TheBloke/Llama-2-7B-Chat-GGUF", progress=events.append)

    expected = tmp_path / "models/TheBloke/Llama-2-7B-Chat-GGUF/llama-2-7b-chat.Q4_K_M.gguf"
    source = (hub_root / "TheBloke/Llama-2-7B-Chat-GGUF/llama-2-7b-chat.Q4_K_M.gguf").read_bytes()
    assert path == expected
    assert path.read_bytes() == source
    assert leftovers(tmp_path / "models") == []
    manifest = Manifest.load(path)
    assert manifest is not None
    assert (manifest.repo_id, manifest.filename, manifest.quant) == (
        "TheBloke/Llama-2-7B-Chat-GGUF",
        "llama-2-7b-chat.Q4_K_M.gguf",
        "Q4_K_M",
    )
    assert [(f.sha256, f.size) for f in manifest.files] == [(sha256(source), len(source))]
    assert manifest.revision == "main"
    assert manifest.commit
    assert manifest.downloaded_at.endswith("+00:00")
    assert events[0].status == "starting"
    assert events[-1].status == "done"
    assert events[-1].bytes_done == events[-1].total == len(source)
    assert events[-1].fraction == 1.0
    assert {e.status for e in events} <= {"starting", "downloading", "verifying", "done"}


def test_a_complete_model_is_returned_without_downloading_again(hub):
    first = dl.download("TheBloke/Llama-2-7B-Chat-GGUF", quant="Q8_0")
    fetched = hub.requests["resolve"]
    events = []
    again = dl.download("TheBloke/Llama-2-7B-Chat-GGUF", quant="q8_0", progress=events.append)

    assert again == first
    assert hub.requests["resolve"] == fetched
    assert [e.status for e in events] == ["starting", "done"]


def test_split_model_downloads_every_shard_and_returns_the_first(hub, hub_root, tmp_path):
    path = dl.download("bartowski/Qwen2.5-7B-Instruct-GGUF", quant="Q8_0")

    folder = "bartowski/Qwen2.5-7B-Instruct-GGUF/Qwen2.5-7B-Instruct-Q8_0"
    shards = [f"Qwen2.5-7B-Instruct-Q8_0-0000{i}-of-00002.gguf" for i in (1, 2)]
    assert path == tmp_path / "models" / folder / shards[0]
    for shard in shards:
        assert (path.parent / shard).read_bytes() == (hub_root / folder / shard).read_bytes()
    manifest = Manifest.load(path)
    assert [f.path.rsplit("/", 1)[1] for f in manifest.files] == shards
    sources = [sha256((hub_root / folder / shard).read_bytes()) for shard in shards]
    assert [f.sha256 for f in manifest.files] == sources


def test_offline_a_downloaded_model_is_found_by_its_manifest(hub, monkeypatch):
    path = dl.download("TheBloke/Llama-2-7B-Chat-GGUF", quant="Q5_K_M")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clear_cache()
    asked = sum(hub.requests.values())

    assert dl.download("TheBloke/Llama-2-7B-Chat-GGUF", quant="q5_k_m") == path
    assert dl.download("TheBloke/Llama-2-7B-Chat-GGUF") == path  # its only local model
    assert sum(hub.requests.values()) == asked
    with pytest.raises(OfflineError, match="Offline mode is on"):
        dl.download("TheBloke/Llama-2-7B-Chat-GGUF", quant="Q8_0")


def test_any_shard_names_its_split_model(hub):
    second = "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00002-of-00002.gguf"
    variant = dl.select_variant("bartowski/Qwen2.5-7B-Instruct-GGUF", second)
    assert variant.filename.endswith("-00001-of-00002.gguf")
    assert len(variant.files) == 2


def test_unknown_file_or_quant_lists_what_exists(hub):
    with pytest.raises(NotFoundError, match=r"no model file 'nope\.gguf'") as excinfo:
        dl.select_variant("TheBloke/Llama-2-7B-Chat-GGUF", "nope.gguf")
    assert "llama-2-7b-chat.Q4_K_M.gguf" in excinfo.value.hint
    with pytest.raises(NotFoundError, match="no IQ2_XXS variant") as excinfo:
        dl.select_variant("TheBloke/Llama-2-7B-Chat-GGUF", quant="IQ2_XXS")
    assert "Q5_K_M" in excinfo.value.hint
    with pytest.raises(InvalidArgumentError, match="either a file or a quant"):
        dl.select_variant("TheBloke/Llama-2-7B-Chat-GGUF", "x.gguf", quant="Q8_0")


def test_several_files_of_one_quant_are_ambiguous_with_the_recommended_first(faulty):
    faulty.files = {"big-1B-Q4_K_M.gguf": b"x" * 300, "small-1B-Q4_K_M.gguf": b"y" * 100}
    with pytest.raises(AmbiguousError, match="2 files of faulty/tiny-GGUF are Q4_K_M") as excinfo:
        dl.download(REPO, quant="q4_k_m")
    assert excinfo.value.candidates == ["small-1B-Q4_K_M.gguf", "big-1B-Q4_K_M.gguf"]
    assert "recommended: small-1B-Q4_K_M.gguf" in excinfo.value.hint
    assert faulty.file_requests() == []


# --- resuming ----------------------------------------------------------------------------------


def wait_for_bytes(child: subprocess.Popen, final: Path, n_bytes: int) -> None:
    """Until the sidecar of ``final`` records ``n_bytes`` on disk (the child must still run)."""
    deadline = time.monotonic() + 20
    while True:
        assert child.poll() is None, "the child ended before it could be killed"
        assert time.monotonic() < deadline, "the child never got going"
        try:
            if sum(b - a for a, b in on_disk(final)) >= n_bytes:
                return
        except (OSError, ValueError, KeyError):  # not written yet
            pass
        time.sleep(0.01)


def test_resumes_after_the_process_is_killed(faulty, tmp_path):
    faulty.faults.rate = 1_000_000  # about 1 s for the file: time to kill it half-way
    package = Path(offgrid_nb.__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(package)}
    code = f"from offgrid_nb.download import download; download({REPO!r}, {FILE!r})"
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    wait_for_bytes(child, target(tmp_path), 256 * 1024)
    with pytest.raises(AlreadyDownloadingError, match="being downloaded by another process"):
        dl.download(REPO, FILE, lock_timeout=0)  # the child holds the lock
    child.send_signal(signal.SIGKILL)
    child.wait()
    [(start, kept)] = on_disk(target(tmp_path))
    assert start == 0
    assert 0 < kept < len(faulty.files[FILE])
    faulty.faults.rate = None
    served_before = len(faulty.file_requests())

    path = dl.download(REPO, FILE)

    assert sha256(path.read_bytes()) == sha256(faulty.files[FILE])
    resumed = faulty.file_requests()[served_before:]
    assert [(r.range, r.status) for r in resumed] == [(f"bytes={kept}-", 206)]
    assert resumed[0].sent == len(faulty.files[FILE]) - kept
    assert leftovers(tmp_path / "models") == []


def test_a_dropped_connection_resumes_where_it_stopped(faulty, tmp_path):
    faulty.faults.drop_at, faulty.faults.drops = 300_000, 1

    path = dl.download(REPO, FILE)

    assert path.read_bytes() == faulty.files[FILE]
    requests = faulty.file_requests()
    assert [(r.range, r.status) for r in requests] == [(None, 200), ("bytes=300000-", 206)]
    assert sum(r.sent for r in requests) == len(faulty.files[FILE])


def test_a_connection_that_keeps_dropping_gives_a_resumable_error(faulty, tmp_path):
    faulty.faults.drop_at, faulty.faults.drops = 300_000, 99

    with pytest.raises(DownloadError, match="failed 4 times in a row") as excinfo:
        dl.download(REPO, FILE)
    assert "run the same command again to resume from 300.0 KB" in excinfo.value.hint
    assert not target(tmp_path).exists()
    assert on_disk(target(tmp_path)) == [(0, 300_000)]

    faulty.faults.drops = 0
    assert dl.download(REPO, FILE).read_bytes() == faulty.files[FILE]
    assert faulty.file_requests()[-1].range == "bytes=300000-"


def test_a_server_that_ignores_range_restarts_the_file_cleanly(faulty, tmp_path):
    faulty.faults.drop_at, faulty.faults.drops = 300_000, 1
    faulty.faults.ignore_range = True

    path = dl.download(REPO, FILE)

    assert path.read_bytes() == faulty.files[FILE]
    requests = [(r.range, r.status) for r in faulty.file_requests()]
    assert requests == [(None, 200), ("bytes=300000-", 200), (None, 200)]


def test_server_errors_are_retried_then_reported(faulty, tmp_path):
    faulty.faults.fail_first = 2
    assert dl.download(REPO, FILE).read_bytes() == faulty.files[FILE]
    assert [r.status for r in faulty.file_requests()] == [503, 503, 200]

    target(tmp_path).unlink()
    (target(tmp_path).parent / (FILE + ".offgrid.json")).unlink()
    faulty.faults.fail_first = 10
    with pytest.raises(DownloadError, match=r"failed 4 times in a row \(HTTP 503\)") as excinfo:
        dl.download(REPO, FILE)
    assert "run the same command again" in excinfo.value.hint
    assert not target(tmp_path).exists()


def test_a_changed_remote_file_is_never_glued_onto_an_old_partial(faulty, tmp_path):
    faulty.faults.drop_at, faulty.faults.drops = 300_000, 99
    with pytest.raises(DownloadError):
        dl.download(REPO, FILE)
    faulty.faults.drops = 0
    faulty.faults.etag = "0" * 64  # same listing, but the server now says it is another file

    path = dl.download(REPO, FILE)

    assert path.read_bytes() == faulty.files[FILE]
    after = [(r.range, r.status) for r in faulty.file_requests()[-2:]]
    assert after == [("bytes=300000-", 206), (None, 200)]  # the partial was discarded


def test_a_new_version_on_the_hub_discards_the_old_partial(faulty, tmp_path):
    faulty.faults.drop_at, faulty.faults.drops = 300_000, 99
    with pytest.raises(DownloadError):
        dl.download(REPO, FILE)
    faulty.faults.drops = 0
    faulty.files[FILE] = os.urandom(1 << 20)
    clear_cache()

    path = dl.download(REPO, FILE)

    assert path.read_bytes() == faulty.files[FILE]
    assert faulty.file_requests()[-1].range is None


@pytest.mark.parametrize("have", [None, [[0, 1000], [1000, 2800]]], ids=["one-stream", "parts"])
def test_a_complete_partial_is_verified_and_moved_without_a_request(hub, hub_root, tmp_path, have):
    repo, name = "TheBloke/Llama-2-7B-Chat-GGUF", "llama-2-7b-chat.Q2_K.gguf"
    data = (hub_root / repo / name).read_bytes()
    final = tmp_path / "models" / repo / name
    final.parent.mkdir(parents=True)
    final.with_name(name + ".part").write_bytes(data)  # killed between last byte and rename
    sidecar = {"sha256": sha256(data), "size": len(data), "etag": sha256(data), "commit": None}
    if have is not None:  # without "have": the sidecar of a one-stream partial (older versions)
        sidecar["have"] = have
    final.with_name(name + ".part.json").write_text(json.dumps(sidecar))

    path = dl.download(repo, name)

    assert path.read_bytes() == data
    assert hub.requests["resolve"] == 0
    assert leftovers(tmp_path / "models") == []


def test_cancel_keeps_the_partial_for_the_next_call(faulty, tmp_path):
    faulty.faults.rate = 4_000_000
    cancel = threading.Event()

    def stop_after_some_bytes(event: dl.DownloadProgress) -> None:
        if event.bytes_done > 100_000:
            cancel.set()

    with pytest.raises(DownloadCancelledError, match="cancelled"):
        dl.download(REPO, FILE, progress=stop_after_some_bytes, cancel=cancel)
    [(start, kept)] = on_disk(target(tmp_path))
    assert start == 0
    assert kept > 100_000
    assert not target(tmp_path).exists()

    faulty.faults.rate = None
    assert dl.download(REPO, FILE).read_bytes() == faulty.files[FILE]
    assert faulty.file_requests()[-1].range == f"bytes={kept}-"


# --- parts -------------------------------------------------------------------------------------


def part_requests(hub: FaultyHub) -> list[tuple[str | None, int]]:
    return sorted(((r.range, r.status) for r in hub.file_requests()), key=str)


def test_a_file_is_fetched_in_parts_over_several_connections(faulty, tmp_path, small_parts):
    faulty.faults.rate = 1_000_000  # per connection: about 0.3 s, a few progress events
    events: list[dl.DownloadProgress] = []

    path = dl.download(REPO, FILE, connections=4, progress=events.append)

    assert path.read_bytes() == faulty.files[FILE]
    quarter = 256 * 1024
    last = "bytes=786432-"  # the last part asks for the rest of the file
    assert part_requests(faulty) == [
        *((f"bytes={i * quarter}-{(i + 1) * quarter - 1}", 206) for i in range(3)),
        (last, 206),
    ]
    assert [e.connections for e in events if e.status == "downloading"][-1] == 4
    assert leftovers(tmp_path / "models") == []


def test_a_connection_asks_for_its_next_part_before_the_current_one_ends(
    faulty, tmp_path, small_parts
):
    # Four parts over two connections: each asks for its second part while the last quarter of
    # its first arrives (no round trip between parts), so up to four bodies are sent at once.
    faulty.faults.rate = 500_000  # per connection: a part takes 0.5 s, the link is the limit
    faulty.faults.latency = 0.03  # a round trip worth hiding (dl.AHEAD_WAIT)

    path = dl.download(REPO, FILE, connections=2)

    assert path.read_bytes() == faulty.files[FILE]
    assert faulty.most_sending > 2
    quarter = 256 * 1024
    assert part_requests(faulty) == [  # each part asked for once
        *((f"bytes={i * quarter}-{(i + 1) * quarter - 1}", 206) for i in range(3)),
        ("bytes=786432-", 206),
    ]
    assert leftovers(tmp_path / "models") == []


def test_a_round_trip_too_short_to_hide_sends_nothing_ahead(faulty, small_parts, monkeypatch):
    faulty.faults.rate = 500_000
    faulty.faults.latency = 0.03
    monkeypatch.setattr(dl, "AHEAD_WAIT", 10.0)  # a wait shorter than this is not worth it

    path = dl.download(REPO, FILE, connections=2)

    assert path.read_bytes() == faulty.files[FILE]
    assert faulty.most_sending == 2


def test_the_connections_setting_is_the_default(faulty, monkeypatch, small_parts):
    monkeypatch.setenv("OFFGRID_DOWNLOAD_CONNECTIONS", "2")
    events: list[dl.DownloadProgress] = []

    dl.download(REPO, FILE, progress=events.append)

    assert events[-1].connections == 2
    assert len(faulty.file_requests()) == 4  # 4 parts over 2 connections


def test_an_idle_connection_takes_half_of_the_part_with_most_left(
    faulty, tmp_path, small_parts, monkeypatch
):
    faulty.faults.rate = 1_000_000  # per connection: each of the 4 parts takes about 0.26 s
    monkeypatch.setattr(dl, "MIN_SPLIT", 32 * 1024)
    size = len(faulty.files[FILE])

    path = dl.download(REPO, FILE, connections=3)  # the last part starts when the others end

    assert path.read_bytes() == faulty.files[FILE]
    spans = asked([r.range for r in faulty.file_requests()], size)
    assert len(spans) > 4  # the 4 parts, and halves of the last ones for idle connections
    assert dl._merged(spans) == [(0, size)]
    halves = [s for s in spans if any(o != s and o[0] < s[0] < o[1] for o in spans)]
    assert halves  # each began inside a part asked for before, which then stopped there
    assert leftovers(tmp_path / "models") == []


@pytest.mark.parametrize("connections", [0, 65, True, 2.5])
def test_a_bad_connection_count_fails_before_any_request(faulty, connections):
    with pytest.raises(InvalidArgumentError, match="connections must be"):
        dl.download(REPO, FILE, connections=connections)
    assert faulty.requests == []


def test_an_empty_file_needs_no_request(faulty, tmp_path):
    faulty.files = {FILE: b""}

    assert dl.download(REPO, FILE).read_bytes() == b""
    assert faulty.file_requests() == []
    assert leftovers(tmp_path / "models") == []


@pytest.mark.parametrize("connections", [8, None])
def test_a_file_smaller_than_a_part_is_one_request(faulty, tmp_path, connections):
    events: list[dl.DownloadProgress] = []

    path = dl.download(REPO, FILE, connections=connections, progress=events.append)  # 1 MiB

    assert {e.connections for e in events} == {1}  # parts are at least 16 MiB

    assert path.read_bytes() == faulty.files[FILE]
    assert part_requests(faulty) == [(None, 200)]


def test_one_range_dropped_mid_way_is_asked_again_from_where_it_stopped(
    faulty, tmp_path, small_parts
):
    faulty.faults.drop_at, faulty.faults.drops = 300_000, 1  # inside the second part

    path = dl.download(REPO, FILE, connections=4)

    assert path.read_bytes() == faulty.files[FILE]
    ranges = [r.range for r in faulty.file_requests()]
    assert len(ranges) == 5
    assert "bytes=300000-524287" in ranges  # the rest of the dropped part, and only that
    assert sum(r.sent for r in faulty.file_requests()) == len(faulty.files[FILE])


def test_a_stalled_range_is_dropped_and_asked_again(faulty, tmp_path, small_parts):
    faulty.faults.stall_at, faulty.faults.stalls = 600_000, 1  # inside the third part

    with settings_override(hub_timeout=0.5):  # no byte for 0.5 s: stalled
        path = dl.download(REPO, FILE, connections=4)

    assert path.read_bytes() == faulty.files[FILE]
    ranges = [r.range for r in faulty.file_requests()]
    assert len(ranges) == 5
    assert "bytes=600000-786431" in ranges
    assert sum(r.sent for r in faulty.file_requests()) == len(faulty.files[FILE])


def test_a_server_that_ignores_range_falls_back_to_one_connection(faulty, tmp_path, small_parts):
    faulty.faults.ignore_range = True

    path = dl.download(REPO, FILE, connections=4)

    assert path.read_bytes() == faulty.files[FILE]
    requests = [(r.range, r.status) for r in faulty.file_requests()]
    assert requests[-1] == (None, 200)  # the whole file over one connection
    assert 1 <= len(requests[:-1]) <= 4
    assert all(header is not None and status == 200 for header, status in requests[:-1])
    assert leftovers(tmp_path / "models") == []


@pytest.mark.parametrize("connections", [4, None])  # None: the adaptive default
def test_a_tampered_byte_in_one_part_fails_verification(faulty, tmp_path, small_parts, connections):
    faulty.faults.corrupt_at = 700_000

    with pytest.raises(ChecksumMismatchError, match="failed verification"):
        dl.download(REPO, FILE, connections=connections)
    assert len(faulty.file_requests()) == 4
    assert not target(tmp_path).exists()
    assert leftovers(tmp_path / "models") == []


@pytest.mark.parametrize("connections", [4, None])  # None: the adaptive default
def test_cancel_mid_way_then_resume_fetches_only_the_missing_ranges(
    faulty, tmp_path, small_parts, connections
):
    faulty.faults.rate = 500_000  # per connection
    cancel = threading.Event()

    def stop_after_some_bytes(event: dl.DownloadProgress) -> None:
        if event.bytes_done > 300_000:
            cancel.set()

    with pytest.raises(DownloadCancelledError):
        dl.download(
            REPO, FILE, connections=connections, progress=stop_after_some_bytes, cancel=cancel
        )
    have = on_disk(target(tmp_path))
    assert len(have) == 4 if connections else len(have) >= dl.RAMP_START  # parts got going
    size = len(faulty.files[FILE])
    missing = gaps(have, size)
    served_before = len(faulty.file_requests())
    faulty.faults.rate = None

    path = dl.download(REPO, FILE, connections=connections)

    assert path.read_bytes() == faulty.files[FILE]
    resumed = faulty.file_requests()[served_before:]
    spans = asked([r.range for r in resumed], size)
    assert dl._merged(spans) == missing
    assert (
        sum(b - a for a, b in spans)
        == sum(r.sent for r in resumed)
        == size - sum(b - a for a, b in have)
    )


# --- how many connections: the adaptive default ---------------------------------------------


@pytest.fixture
def capped_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, bytes]]:
    """A 16 MiB file in parts of 1 MiB behind a mirror that paces each connection to 4 MB/s
    (in 256 KiB writes), as a CDN does: the more connections, the faster (``repo_id``, the
    file's bytes)."""
    repo_id, data = "capped/link-GGUF", os.urandom(16 << 20)
    (tmp_path / "hub" / repo_id).mkdir(parents=True)
    (tmp_path / "hub" / repo_id / FILE).write_bytes(data)
    monkeypatch.setattr(dl, "MIN_PART", 1 << 20)
    with MirrorServer(tmp_path / "hub", rate_per_connection=4_000_000) as mirror:
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "models"))
        monkeypatch.delenv("OFFGRID_DOWNLOAD_CONNECTIONS", raising=False)
        clear_cache()
        yield repo_id, data


def test_the_default_adds_connections_while_they_raise_the_speed(capped_link):
    repo_id, data = capped_link
    events: list[dl.DownloadProgress] = []

    path = dl.download(repo_id, FILE, progress=events.append)

    assert path.read_bytes() == data
    counts = [e.connections for e in events if e.status == "downloading" and e.bytes_done]
    assert counts[0] == dl.RAMP_START
    assert max(counts) > dl.RAMP_START  # the first doubling always happens (CPU permitting)


def test_an_explicit_connection_count_stays_fixed(capped_link):
    repo_id, data = capped_link
    events: list[dl.DownloadProgress] = []

    path = dl.download(repo_id, FILE, connections=3, progress=events.append)

    assert path.read_bytes() == data
    assert {e.connections for e in events if e.status == "downloading" and e.bytes_done} == {3}


def ramp_counts(ramp: dl._Ramp, phases: list[tuple[float, float]]) -> list[int]:
    """Feed ``ramp`` one measured interval per ``(bytes per second, CPU cores busy)`` phase;
    the count it chose after each."""
    now, received, cpu = 100.0, 0, 5.0
    counts = []
    for speed, busy in phases:
        ramp.observe(now, received, cpu)  # starts measuring the current count
        now += dl.RAMP_INTERVAL
        received += int(speed * dl.RAMP_INTERVAL)
        cpu += busy * dl.RAMP_INTERVAL
        counts.append(ramp.observe(now, received, cpu))
    return counts


MB = 1_000_000


def test_the_ramp_doubles_while_each_doubling_pays_up_to_its_cap():
    ramp = dl._Ramp(16)  # a link of 25 MB/s per connection
    speeds = [(50 * MB, 0.1), (100 * MB, 0.2), (200 * MB, 0.4), (400 * MB, 0.8)]

    assert ramp_counts(ramp, speeds) == [4, 8, 16, 16]
    assert ramp.settled
    assert ramp_counts(ramp, [(800 * MB, 0.1)]) == [16]


def test_the_ramp_undoes_a_doubling_that_did_not_pay_and_stays():
    ramp = dl._Ramp(16)  # 25 MB/s per connection, 100 MB/s in total
    speeds = [(50 * MB, 0.1), (100 * MB, 0.2), (105 * MB, 0.2)]  # +5%: not worth 8 connections

    assert ramp_counts(ramp, speeds) == [4, 8, 4]
    assert ramp.settled
    assert ramp_counts(ramp, [(50 * MB, 0.1), (500 * MB, 0.1)]) == [4, 4]


def test_a_settled_count_below_the_cap_is_measured_again_after_a_while():
    ramp = dl._Ramp(16)
    assert ramp_counts(ramp, [(50 * MB, 0.1), (52 * MB, 0.1)]) == [4, 2]  # a cold server
    settled_at = 100.0 + 2 * dl.RAMP_INTERVAL
    assert ramp.observe(settled_at + dl.RAMP_RECHECK - 0.1, 0, 0.0) == 2
    assert ramp.settled
    now = settled_at + dl.RAMP_RECHECK
    ramp.observe(now, 0, 0.0)  # warm now: measured again...
    assert not ramp.settled
    assert ramp.observe(now + dl.RAMP_INTERVAL, 10 * MB, 0.01) == 4  # ...and doubled


def test_the_ramp_stops_where_the_cpu_is_the_limit():
    assert ramp_counts(dl._Ramp(16), [(900 * MB, 0.9)]) == [2]  # bare loopback
    phases = [(50 * MB, 0.3), (100 * MB, 0.9), (200 * MB, 0.1)]  # it paid, but the CPU is busy
    assert ramp_counts(dl._Ramp(16), phases) == [4, 4, 4]


def test_the_ramp_measures_an_interval_from_when_every_connection_delivers():
    ramp = dl._Ramp(16)
    half = dl.RAMP_INTERVAL / 2
    assert ramp.observe(0.0, 0, 0.0, ready=False) == 2  # a connection still waits for bytes
    assert ramp.observe(1.0, MB, 0.0, ready=False) == 2
    assert ramp.observe(2.0, 2 * MB, 0.0) == 2  # measuring starts here
    assert ramp.observe(2.0 + half / 2, 3 * MB, 0.0) == 2  # too soon to tell
    assert ramp.observe(2.0 + half, 4 * MB, 0.0) == 4  # the first count: half an interval
    assert ramp.observe(3.0, 5 * MB, 0.0, ready=False) == 4  # the 2 new ones still wait
    assert ramp.observe(4.0, 6 * MB, 0.0) == 4
    assert ramp.observe(4.0 + half, 10 * MB, 0.0) == 4  # the others: a whole interval
    assert ramp.observe(4.0 + dl.RAMP_INTERVAL, 12 * MB, 0.0) == 8


@pytest.mark.parametrize(("cap", "start", "counts"), [(3, 2, [3, 3]), (5, 5, [5, 5]), (1, 1, [1])])
def test_the_ramp_never_passes_its_cap_and_a_fixed_count_never_moves(cap, start, counts):
    ramp = dl._Ramp(cap, start)
    assert ramp_counts(ramp, [(n * 10 * MB, 0.1) for n in range(1, len(counts) + 1)]) == counts
    assert ramp.settled


def test_the_prefix_hash_takes_fed_chunks_at_its_end_and_reads_back_the_rest(tmp_path):
    data = os.urandom(3 * MB + 5)
    path = tmp_path / "file.part"
    path.write_bytes(data)
    digest = dl._PrefixHash(path)
    digest.feed(MB, memoryview(data)[MB : 2 * MB])  # ahead of the hash: left to read back
    assert digest.hashed == 0
    digest.feed(0, memoryview(data)[:MB])  # extends it: no read-back
    assert digest.hashed == MB
    assert digest.update(2 * MB, budget=MB // 2) == MB // 2
    assert digest.update(len(data)) == len(data) - MB - MB // 2
    digest.close()
    assert digest.hasher.hexdigest() == sha256(data)


def test_parts_resume_after_sigkill_asking_only_for_missing_ranges(tmp_path, monkeypatch):
    repo_id, size = "slow/link-GGUF", 4 << 20
    data = os.urandom(size)
    (tmp_path / "hub" / repo_id).mkdir(parents=True)
    (tmp_path / "hub" / repo_id / FILE).write_bytes(data)
    final = tmp_path / "models" / repo_id / FILE
    with MirrorServer(tmp_path / "hub", rate_per_connection=1_500_000) as mirror:
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(offgrid_nb.__file__).parent.parent),
            "HF_ENDPOINT": mirror.url,
            "HF_HUB_DISABLE_XET": "1",
            "OFFGRID_MODELS_DIR": str(tmp_path / "models"),
        }
        code = (
            "import importlib; d = importlib.import_module('offgrid_nb.download'); "
            "d.MIN_PART = 1 << 20; "
            f"d.download({repo_id!r}, {FILE!r}, connections=4)"
        )
        child = subprocess.Popen([sys.executable, "-c", code], env=env)
        wait_for_bytes(child, final, size // 3)
        child.send_signal(signal.SIGKILL)
        child.wait()
        have = on_disk(final)
        assert len(have) == 4  # four parts, each part-way
        missing = gaps(have, size)
        deadline = time.monotonic() + 10
        while sum("/resolve/" in r.path for r in mirror.log) < 4:  # logged once they end
            assert time.monotonic() < deadline
            time.sleep(0.01)
        served_before = len(mirror.log)
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "models"))
        monkeypatch.setattr(dl, "MIN_PART", 1 << 20)
        clear_cache()

        path = dl.download(repo_id, FILE, connections=4)

    assert path.read_bytes() == data
    resumed = [r for r in mirror.log[served_before:] if "/resolve/" in r.path]
    assert {r.status for r in resumed} == {206}
    spans = asked([r.range for r in resumed], size)
    assert dl._merged(spans) == missing  # each gap, maybe cut in parts...
    assert sum(b - a for a, b in spans) == sum(b - a for a, b in missing)  # ...asked for once
    assert sum(r.sent for r in resumed) == sum(b - a for a, b in missing)
    assert leftovers(tmp_path / "models") == []


def test_a_split_model_is_fetched_in_parts_shard_by_shard(hub, hub_root, monkeypatch):
    monkeypatch.setattr(dl, "MIN_PART", 1000)
    events: list[dl.DownloadProgress] = []

    path = dl.download(
        "bartowski/Qwen2.5-7B-Instruct-GGUF", quant="Q8_0", connections=4, progress=events.append
    )

    folder = hub_root / "bartowski/Qwen2.5-7B-Instruct-GGUF/Qwen2.5-7B-Instruct-Q8_0"
    for shard in sorted(folder.iterdir()):
        data = shard.read_bytes()
        assert (path.parent / shard.name).read_bytes() == data
        ranges = [r.range for r in hub.log if r.path.endswith(shard.name)]
        assert len(ranges) == 4
        assert dl._merged(asked(ranges, len(data))) == [(0, len(data))]
    done = [e.bytes_done for e in events]
    assert done == sorted(done)  # one stream of progress over both shards
    assert events[-1].bytes_done == events[-1].total == 7500
    assert {e.file_index for e in events if e.status == "downloading"} == {1, 2}


# --- verification and safety -------------------------------------------------------------------


@pytest.fixture
def own_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A mirror over a folder this test may change (the session's Hub folder is shared)."""
    root = tmp_path / "hub"
    root.mkdir()
    with MirrorServer(root) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "models"))
        clear_cache()
        yield root


def test_a_tampered_file_is_discarded_and_never_appears(own_mirror, tmp_path):
    repo = own_mirror / "evil/tampered-GGUF"
    repo.mkdir(parents=True)
    (repo / FILE).write_bytes(os.urandom(5000))
    (repo / "repo.json").write_text(json.dumps({"sha256": {FILE: "ab" * 32}}))

    with pytest.raises(ChecksumMismatchError, match=f"{FILE} of evil/tampered-GGUF failed verif"):
        dl.download("evil/tampered-GGUF", FILE)
    folder = tmp_path / "models/evil/tampered-GGUF"
    assert sorted(p.name for p in folder.iterdir()) == [f"{FILE}.lock"]


@pytest.mark.parametrize(
    "name",
    [
        "../../evil-Q4_K_M.gguf",
        "sub/../../../evil-Q4_K_M.gguf",
        "/tmp/evil-Q4_K_M.gguf",
        "..\\..\\evil-Q4_K_M.gguf",
        "C:/evil-Q4_K_M.gguf",
        "./evil-Q4_K_M.gguf",
    ],
)
def test_a_file_name_that_would_escape_the_models_folder_is_refused(faulty, tmp_path, name):
    faulty.files = {name: b"not a model"}

    with pytest.raises(UnsafePathError, match="would land outside"):
        dl.download(REPO, name)
    assert faulty.file_requests() == []
    assert [p for p in tmp_path.rglob("evil*")] == []


def test_a_link_inside_the_models_folder_cannot_lead_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo_folder = tmp_path / "models" / REPO
    repo_folder.mkdir(parents=True)
    (repo_folder / "sub").symlink_to(outside)

    with pytest.raises(UnsafePathError):
        dl.local_path(tmp_path / "models", REPO, "sub/x.gguf")
    assert dl.local_path(tmp_path / "models", REPO, "q/x.gguf") == repo_folder / "q/x.gguf"


def test_a_gated_repo_without_token_names_the_fix(hub, tmp_path):
    with pytest.raises(GatedRepoError, match="is gated") as excinfo:
        dl.download("meta-llama/Llama-3.2-1B-Instruct-GGUF")
    assert "HF_TOKEN" in excinfo.value.hint
    assert "hf auth login" in excinfo.value.hint
    assert list((tmp_path / "models").rglob("*.gguf")) == []


def test_a_gated_repo_downloads_with_the_token(hub, hub_root, hub_token, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub_token)
    path = dl.download("meta-llama/Llama-3.2-1B-Instruct-GGUF")
    source = hub_root / "meta-llama/Llama-3.2-1B-Instruct-GGUF" / path.name
    assert path.read_bytes() == source.read_bytes()


def test_not_enough_disk_space_fails_before_the_first_byte(hub, monkeypatch, tmp_path):
    class Usage:
        free = 1000

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda path: Usage)
    folder = tmp_path / "models/TheBloke/Llama-2-7B-Chat-GGUF"
    message = (
        rf"disk space in {re.escape(str(folder))}: .* needs 3.8 KB more but only 1.0 KB is free"
    )

    with pytest.raises(DiskSpaceError, match=message):
        dl.download("TheBloke/Llama-2-7B-Chat-GGUF")
    assert hub.requests["resolve"] == 0
    assert [p.name for p in folder.iterdir()] == ["llama-2-7b-chat.Q4_K_M.gguf.lock"]


def test_two_concurrent_downloads_of_one_file_fetch_it_once(faulty, tmp_path):
    faulty.faults.rate = 4_000_000
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(dl.download(REPO, FILE))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert results == [target(tmp_path)] * 2
    assert results[0].read_bytes() == faulty.files[FILE]
    assert [(r.range, r.status) for r in faulty.file_requests()] == [(None, 200)]


# --- progress ----------------------------------------------------------------------------------


def test_progress_events_are_throttled_and_complete(faulty):
    faulty.faults.rate = 1_500_000  # about 0.7 s, in 32 chunks of 32 KiB
    events: list[dl.DownloadProgress] = []

    start = time.monotonic()
    dl.download(REPO, FILE, progress=events.append)
    elapsed = time.monotonic() - start

    moving = [e for e in events if e.status == "downloading"]
    assert 3 <= len(moving) <= elapsed / dl.PROGRESS_INTERVAL + 2  # not one per chunk
    assert len(moving) < 32
    assert [e.bytes_done for e in moving] == sorted(e.bytes_done for e in moving)
    assert all(e.speed > 0 and e.eta is not None for e in moving[1:])
    assert [e.status for e in events[-2:]] == ["verifying", "done"]
    assert events[-1].bytes_done == events[-1].total == len(faulty.files[FILE])
    assert events[-1].speed > 0
    assert events[-1].eta == 0
    assert (events[-1].file_index, events[-1].n_files) == (1, 1)
