"""Download throughput: ``offgrid_nb.download`` at its default (adaptive) connection count and
at 1-16 fixed ones against ``curl -o`` and ``huggingface_hub.hf_hub_download`` (Xet off), on
simulated links and on bare loopback.

A file of random bytes (512 MB by default) is served by ``offgrid mirror`` on loopback, in its
own process (sharing our GIL would halve our speed and measure the GIL). The link is simulated
by the mirror's ``--rate-per-connection``, ``--rate-total`` and ``--latency-ms``:

  (a) 25 MB/s per connection, 30 ms per request: what one connection to a CDN often gets.
      Target: ours at the default >= 5x curl.
  (b) the same with a 100 MB/s total cap (the link itself). Target: the default >= 0.95 of
      the cap.
  (c) bare loopback, where one connection is not the limit. ``--runs`` alternating rounds,
      medians. Target: the default >= 0.9x curl.

The default (no ``connections``) picks its count as it goes (``offgrid_nb.download._Ramp``); the
counts it settled at are printed with the table.
  (d) a download in a subprocess is SIGKILLed once half the file has crossed a TCP proxy in
      front of the mirror, then run again; the bytes the second run received (the wire's view,
      counted by the proxy) as a share of the file. Target: <= 55%. On links (a) and (c).
  (e) link (a) behind a proxy that holds the total to 40 MB/s for the first 3 s (a cold server
      or CDN edge warming up): the default, which measures a settled count again every few
      seconds, against curl on (a). No target; the counts per run show the ramp.

``curl -o, then openssl sha256`` is a download checked as ours is (we hash while the bytes
arrive): the like-for-like reference for (c) on a machine with few cores, where the mirror, the
client and the hash share them; the line after the table gives the default against it. The
CPU columns (seconds per GB, medians) say who was busy: the client with its child processes
(``getrusage``) and the mirror (``psutil``).

Verification: the seconds from the last byte to the end of the call (sha256 of the prefix is
computed while the parts arrive: only the tail is left) against one sha256 pass over the
finished file, which is what verifying after the download would cost at least.

Run from the repository root with the package importable (``pip install -e .``, or
``PYTHONPATH=.``):
``python benchmarks/download_throughput.py [--size-mb 512] [--runs 5] [--links abc]``.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

os.environ["HF_HUB_DISABLE_XET"] = "1"  # before huggingface_hub reads it, at import
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

DEFAULT = "offgrid_nb, default"
REPO = "bench/random-GGUF"
FILE = "random-Q4_K_M.gguf"
PER_CONNECTION = 25_000_000  # bytes/s
TOTAL = 100_000_000
LATENCY_MS = 30
CAPPED = ["--rate-per-connection", str(PER_CONNECTION), "--latency-ms", str(LATENCY_MS)]
LINKS = {
    "a": ("(a) 25 MB/s per connection, 30 ms", CAPPED),
    "b": ("(b) (a) + 100 MB/s in total", [*CAPPED, "--rate-total", str(TOTAL)]),
    "c": ("(c) bare loopback", []),
}
COLD = (40_000_000, 3.0)  # link (e): bytes/s in total for the first seconds
TARGETS = {"a": ">= 5x curl", "b": ">= 0.95 of the cap (c)", "c": ">= 0.9x curl"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mirror:
    """``offgrid mirror`` in its own process, on one simulated link."""

    def __init__(self, root: Path, env: dict[str, str], link: list[str]) -> None:
        port = free_port()
        cmd = [sys.executable, "-m", "offgrid_nb.cli", "mirror", str(root), "--port", str(port)]
        self.process = subprocess.Popen([*cmd, *link], env=env, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()  # "Serving ... on http://127.0.0.1:PORT ..."
        if "Serving" not in line:
            self.process.kill()
            raise SystemExit(f"the mirror did not start: {line!r}")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # the first listing hashes the file: not part of any timing
        subprocess.run(
            ["curl", "-sS", "-o", os.devnull, f"{self.url}/api/models/{REPO}?blobs=true"]
        )

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


class CountingProxy(socketserver.ThreadingTCPServer):
    """A TCP proxy to ``upstream`` that counts the bytes sent back to clients; ``cold``:
    (bytes/s, seconds), a cap on their total for that long after the first of them."""

    daemon_threads = True

    def __init__(self, upstream: tuple[str, int], cold: tuple[float, float] | None = None) -> None:
        self.upstream = upstream
        self.received = 0
        self.lock = threading.Lock()
        self.cold = cold
        self.started: float | None = None
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def pace(self, n: int) -> None:
        """Count ``n`` more bytes; while the cold cap holds, wait until it lets them through."""
        with self.lock:
            self.received += n
            now = time.monotonic()
            self.started = self.started or now
            if self.cold is None or now - self.started >= self.cold[1]:
                return
            wait = self.received / self.cold[0] - (now - self.started)
        time.sleep(max(wait, 0.0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        proxy: CountingProxy = self.server  # type: ignore[assignment]
        try:
            with socket.create_connection(proxy.upstream) as upstream:
                threading.Thread(
                    target=self.pump, args=(self.request, upstream), daemon=True
                ).start()
                while data := upstream.recv(1 << 20):
                    proxy.pace(len(data))
                    self.request.sendall(data)
        except OSError:  # the client was killed
            pass

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def curl(url: str, work: Path) -> float:
    out = work / "curl.out"
    seconds = timed(
        lambda: subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    )
    out.unlink()
    return seconds


def curl_verified(url: str, work: Path) -> float:
    """``curl -o``, then the file's sha256 (``openssl dgst``, which uses the CPU's SHA
    instructions; coreutils' ``sha256sum`` does not, and ``curl | tee`` through a pipe costs
    more than the hash): a download checked as ours is, by the tools at hand."""
    out = work / "curl.out"
    hash_it = ["openssl", "dgst", "-sha256", str(out)]
    seconds = timed(
        lambda: (
            subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True),
            subprocess.run(hash_it, check=True, stdout=subprocess.DEVNULL),
        )
    )
    out.unlink()
    return seconds


def cpu_seconds(mirror: psutil.Process) -> tuple[float, float]:
    """CPU seconds used so far by this process and its waited-for children, and by the mirror."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    spent = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    times = mirror.cpu_times()
    return spent, times.user + times.system


def hf(url: str, work: Path) -> float:
    from huggingface_hub import hf_hub_download

    cache = work / "hf-cache"
    seconds = timed(lambda: hf_hub_download(REPO, FILE, cache_dir=cache, endpoint=url))
    shutil.rmtree(cache)
    return seconds


class Ours:
    """``offgrid_nb.download`` with ``connections`` (None: the default), timed; also records
    the seconds from the last byte (the "verifying" event) to the end of the call, and the
    connection counts the progress events reported."""

    def __init__(self, connections: int | None) -> None:
        self.connections = connections
        self.tail = 0.0  # of the last run
        self.counts: list[int] = []  # of the last run, in order, repeats dropped

    def __call__(self, url: str, work: Path) -> float:
        from offgrid_nb import clear_cache
        from offgrid_nb.download import DownloadProgress, download

        os.environ["HF_ENDPOINT"] = url
        clear_cache()  # the listing request is part of a real download
        models = work / "models"
        marks: dict[str, float] = {}

        counts: list[int] = []

        def progress(event: DownloadProgress) -> None:
            marks.setdefault(event.status, time.perf_counter())
            fetching = event.status == "downloading" and event.bytes_done  # parts started
            if fetching and counts[-1:] != [event.connections]:
                counts.append(event.connections)

        seconds = timed(
            lambda: download(
                REPO, FILE, models_dir=models, connections=self.connections, progress=progress
            )
        )
        self.tail = time.perf_counter() - marks["verifying"]
        self.counts = counts
        shutil.rmtree(models)
        return seconds


def one_pass_sha256(path: Path) -> float:
    from offgrid_nb.library import hash_file

    hash_file(path)  # into the page cache, as a just-downloaded file is
    return timed(lambda: hash_file(path))


def kill_at_half(
    url: str, work: Path, size: int, env: dict[str, str]
) -> tuple[float, float, float]:
    """SIGKILL a download (default settings) once half the file crossed the proxy, resume it.

    Returns:
        Shares of the file: received by the killed run, recorded in its sidecar, received by
        the second run.
    """
    mirror_port = int(url.rsplit(":", 1)[1])
    proxy = CountingProxy(("127.0.0.1", mirror_port))
    models = work / "resume"
    code = (
        "from offgrid_nb.download import download; "
        f"download({REPO!r}, {FILE!r}, models_dir={str(models)!r})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env={**env, "HF_ENDPOINT": proxy.url})
    while child.poll() is None and proxy.received < size // 2:
        time.sleep(0.0005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    first = proxy.received
    if child.returncode != -signal.SIGKILL:
        raise SystemExit("the download ended before it could be killed: use a bigger --size-mb")
    sidecar = json.loads((models / REPO / f"{FILE}.part.json").read_text())
    recorded = sum(end - start for start, end in sidecar["have"])
    time.sleep(0.2)  # let the proxy's threads notice the closed connections
    proxy.received = 0
    from offgrid_nb import clear_cache
    from offgrid_nb.download import download

    os.environ["HF_ENDPOINT"] = proxy.url
    clear_cache()
    download(REPO, FILE, models_dir=models)
    second = proxy.received  # the file's bytes, plus a few KB of headers and listing
    proxy.shutdown()
    shutil.rmtree(models)
    return first / size, recorded / size, second / size


def cold_start(url: str, work: Path) -> tuple[float, list[int]]:
    """The default on link (e): ``url``'s mirror behind a proxy capped at ``COLD`` for its
    first seconds. Returns the seconds and the connection counts it reported."""
    mirror_port = int(url.rsplit(":", 1)[1])
    proxy = CountingProxy(("127.0.0.1", mirror_port), cold=COLD)
    default = Ours(None)
    seconds = default(proxy.url, work)
    proxy.shutdown()
    return seconds, default.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5, help="rounds on each link (medians)")
    parser.add_argument("--links", default="abc", help="which links, e.g. bc (default: all)")
    args = parser.parse_args()
    links = {key: LINKS[key] for key in args.links if key in LINKS}
    if not links:
        raise SystemExit(f"--links: choose from {''.join(LINKS)}")
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        raise SystemExit("curl and openssl are needed for the comparison")
    size = args.size_mb * 10**6
    default = Ours(None)
    clients: dict[str, Callable[[str, Path], float]] = {
        "curl -o": curl,
        "curl -o, then openssl sha256": curl_verified,
        "hf_hub_download": hf,
        **{f"offgrid_nb, {n} connection{'s' if n > 1 else ''}": Ours(n) for n in (1, 4, 8, 16)},
        DEFAULT: default,
    }
    results: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[tuple[float, float]]]] = {}  # (client, mirror) CPU s per run
    tails: dict[str, dict[str, list[float]]] = {}  # seconds from our last byte to the end
    counts: dict[str, list[list[int]]] = {}  # the default's connection counts, per run
    kills: dict[str, tuple[float, float, float]] = {}
    colds: list[tuple[float, list[int]]] = []  # link (e): seconds and counts per run

    with tempfile.TemporaryDirectory(prefix="offgrid-bench-") as tmp:
        work = Path(tmp)
        (work / "hub" / REPO).mkdir(parents=True)
        source = work / "hub" / REPO / FILE
        with open(source, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(10**6))
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
        for key, (_, link) in links.items():
            mirror = Mirror(work / "hub", env, link)
            file_url = f"{mirror.url}/{REPO}/resolve/main/{FILE}"
            try:
                results[key] = {name: [] for name in clients}
                cpu[key] = {name: [] for name in clients}
                served = psutil.Process(mirror.process.pid)
                tails[key] = {name: [] for name in clients}
                counts[key] = []
                for _ in range(args.runs):  # alternate, so a busy moment hurts all alike
                    for name, client in clients.items():
                        url = file_url if client in (curl, curl_verified) else mirror.url
                        before = cpu_seconds(served)
                        results[key][name].append(client(url, work))
                        after = cpu_seconds(served)
                        cpu[key][name].append((after[0] - before[0], after[1] - before[1]))
                        if isinstance(client, Ours):
                            tails[key][name].append(client.tail)
                        if client is default:
                            counts[key].append(default.counts)
                if key in ("a", "c"):
                    kills[key] = kill_at_half(mirror.url, work, size, env)
                if key == "a":
                    colds = [cold_start(mirror.url, work) for _ in range(args.runs)]
            finally:
                mirror.stop()
        one_pass = one_pass_sha256(source)

    print(f"file: {args.size_mb} MB of random bytes, mirror in its own process")
    print(f"{args.runs} alternating rounds on each link, medians")
    print("CPU: seconds per GB of the client (with its child processes) and of the mirror")
    print(f"{'link':<36}{'client':<28}{'MB/s':>8}{'ratio':>8}{'CPU':>6}{'mirror':>7}  target")
    for key, (title, _) in links.items():
        medians = {name: statistics.median(times) for name, times in results[key].items()}
        base = medians["curl -o"]
        for i, (name, seconds) in enumerate(medians.items()):
            speed = size / seconds / 1e6
            if key == "b":  # against the cap
                ratio = f"{speed * 1e6 / TOTAL:>7.2f}c"
            else:
                ratio = f"{base / seconds:>7.2f}x"
            target = TARGETS[key] if name == DEFAULT else ""
            label = title if i == 0 else ""
            runs_cpu = zip(*cpu[key][name], strict=True)
            per_gb = [statistics.median(side) / (size / 1e9) for side in runs_cpu]
            usage = f"{per_gb[0]:>6.2f}{per_gb[1]:>7.2f}"
            print(f"{label:<36}{name:<28}{speed:>8.0f}{ratio:>8}{usage}  {target}")
        runs = ", ".join("->".join(map(str, run)) for run in counts[key])
        print(f"{'':<36}the default's connections, per run: {runs}")
    if "c" in results:
        verified = statistics.median(results["c"]["curl -o, then openssl sha256"])
        print(
            f"(c) the default against curl -o, then its sha256: "
            f"{verified / statistics.median(results['c'][DEFAULT]):.2f}x"
        )
    if colds:
        seconds = statistics.median(run for run, _ in colds)
        runs = ", ".join("->".join(map(str, counts)) for _, counts in colds)
        print(
            f"(e) link (a), {COLD[0] / 1e6:.0f} MB/s in total for its first {COLD[1]:g} s: the"
            f" default {size / seconds / 1e6:.0f} MB/s,"
            f" {statistics.median(results['a']['curl -o']) / seconds:.2f}x curl on (a);"
            f" connections per run: {runs}"
        )
    for key, (first, recorded, second) in kills.items():
        print(
            f"(d) on link {LINKS[key][0][:3]}: SIGKILL once {first:.1%} of the file crossed the"
            f" wire ({recorded:.1%} recorded in the sidecar); the second run received"
            f" {second:.1%} of the file (target <= 55%)"
        )
    print(
        f"one sha256 pass over the finished file (what verifying after it costs): {one_pass:.3f} s"
    )
    for key, name in (("a", "offgrid_nb, 8 connections"), ("c", DEFAULT)):
        if key not in tails:
            continue
        tail = statistics.median(tails[key][name])
        print(
            f"  ours on link {key}, {name.split(', ')[1]}: {tail:.3f} s from the last byte to"
            " the end (the prefix is hashed while the parts arrive)"
        )


if __name__ == "__main__":
    main()
