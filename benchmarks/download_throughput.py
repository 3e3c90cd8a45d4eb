"""Download throughput: ``offgrid_nb.download`` (with sha256 verification) against ``curl -o``.

A file of random bytes (256 MB by default) is served by ``offgrid mirror`` on loopback. The
mirror runs in its own process, as it does for ``curl``, so our client and the server do not
share a GIL: with ``MirrorServer`` in our process, the server thread halves our speed (measured
on 2 vCPUs: curl ~400 MB/s, ours ~170 MB/s) and the comparison would be about the GIL.

Reported:
  * MB/s of ours and of curl, best and median of ``--runs`` alternating runs, and our speed
    over curl's (target >= 0.9);
  * resume: a download in a subprocess is SIGKILLed once half the file is on disk, then run
    again; the bytes the second run received, counted by a TCP proxy in front of the mirror (the
    wire's view, not ours), as a share of the file (target <= 55%).

Run from the repository root with the package importable (``pip install -e .``, or
``PYTHONPATH=.``): ``python benchmarks/download_throughput.py [--size-mb 256] [--runs 7]``.
Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = "bench/random-GGUF"
FILE = "random-Q4_K_M.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mirror(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "offgrid_nb.cli", "mirror", str(root), "--port", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()  # "Serving ... on http://127.0.0.1:PORT ..."
    if "Serving" not in line:
        server.kill()
        raise SystemExit(f"the mirror did not start: {line!r}")
    return server, f"http://127.0.0.1:{port}"


class CountingProxy(socketserver.ThreadingTCPServer):
    """A TCP proxy to ``upstream`` that counts the bytes sent back to clients."""

    daemon_threads = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.received = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        proxy: CountingProxy = self.server  # type: ignore[assignment]
        with socket.create_connection(proxy.upstream) as upstream:
            threading.Thread(target=self.pump, args=(self.request, upstream), daemon=True).start()
            while data := upstream.recv(1 << 20):
                with proxy.lock:
                    proxy.received += len(data)
                self.request.sendall(data)

    @staticmethod
    def pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass


def time_curl(url: str, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def time_ours(models: Path) -> float:
    from offgrid_nb import clear_cache
    from offgrid_nb.download import download

    clear_cache()  # the listing request is part of a real download
    start = time.perf_counter()
    download(REPO, FILE, models_dir=models)  # HF_ENDPOINT says where from
    elapsed = time.perf_counter() - start
    shutil.rmtree(models)
    return elapsed


def kill_at_half(models: Path, size: int, env: dict[str, str]) -> int:
    """Run a download in a subprocess and SIGKILL it once half the file is on disk."""
    code = (
        "from offgrid_nb.download import download; "
        f"download({REPO!r}, {FILE!r}, models_dir={str(models)!r})"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    part = models / REPO / f"{FILE}.part"
    while child.poll() is None:
        if part.is_file() and part.stat().st_size >= size // 2:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.0005)
    child.wait()
    if not part.is_file():
        raise SystemExit("the download finished before it could be killed: use a bigger --size-mb")
    return part.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed for the comparison")
    size = args.size_mb * 10**6

    with tempfile.TemporaryDirectory(prefix="offgrid-bench-") as tmp:
        work = Path(tmp)
        (work / "hub" / REPO).mkdir(parents=True)
        with open(work / "hub" / REPO / FILE, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(10**6))
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "HF_HUB_DISABLE_XET": "1"}
        server, url = start_mirror(work / "hub", env)
        os.environ.update(HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1")
        file_url = f"{url}/{REPO}/resolve/main/{FILE}"
        try:
            subprocess.run(["curl", "-sS", "-o", os.devnull, f"{url}/api/models/{REPO}?blobs=true"])
            curl, ours = [], []
            for i in range(args.runs):  # alternate, so a busy moment hurts both alike
                curl.append(time_curl(file_url, work / "curl.out"))
                ours.append(time_ours(work / f"models{i}"))
            models = work / "resume"
            at_kill = kill_at_half(models, size, {**env, "HF_ENDPOINT": url})
            proxy = CountingProxy(("127.0.0.1", int(url.rsplit(":", 1)[1])))
            os.environ["HF_ENDPOINT"] = proxy.url
            time_ours(models)
            resent = proxy.received  # the file's bytes, plus a few KB of headers and listing
            proxy.shutdown()
        finally:
            server.terminate()
            server.wait()

    def row(name: str, seconds: list[float]) -> str:
        best, median = min(seconds), sorted(seconds)[len(seconds) // 2]
        ratios = f"{min(curl) / best:>10.2f}{sorted(curl)[len(curl) // 2] / median:>10.2f}"
        return f"{name:<26}{size / best / 1e6:>10.0f}{size / median / 1e6:>10.0f}{ratios}"

    print(f"file: {args.size_mb} MB of random bytes, mirror in its own process, {args.runs} runs")
    print(f"{'client':<26}{'best MB/s':>10}{'median':>10}{'ratio':>10}{'(median)':>10}")
    print(row("curl -o", curl))
    print(row("offgrid_nb (sha256 on)", ours))
    print(
        f"resume after SIGKILL at {at_kill / size:.0%}: second run transferred "
        f"{resent / 1e6:.1f} MB = {resent / size:.1%} of the file"
    )


if __name__ == "__main__":
    main()
