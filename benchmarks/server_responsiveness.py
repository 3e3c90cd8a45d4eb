"""Does a Jupyter server with offgrid_nb's extension stay responsive while a benchmark runs?

A real ``jupyter server`` (subprocess, loopback, a token; the extension enabled by its
installed config file) serves a generated model big enough for a benchmark of several seconds,
and ``offgrid mirror`` (another subprocess) serves a demo Hub. Reported:

  * ``GET /api/status`` latency, p50 / p99 / max, polled back to back (10 ms apart) first with
    nothing running (the baseline), then while ``POST /offgrid/v1/benchmark`` runs
    (target: p99 < 100 ms);
  * ``GET /offgrid/v1/search`` throughput for a cached query (requests/s), from one client and
    from several at once.

Run from the repository root with the package installed (``pip install -e .``):
``python benchmarks/server_responsiveness.py [--idle-seconds 3] [--searches 400]``. Not a test.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from offgrid_nb.demo import build_demo_hub
from offgrid_nb.synthetic import TinyModelSpec, write_tiny_model

TOKEN = "responsiveness-benchmark"
MODEL = "bench-llama-F32"
SPEC = TinyModelSpec(n_layers=4, n_embd=512, n_ff=1024, n_head=8, n_head_kv=4, n_ctx=4096)
POLL_GAP = 0.01  # seconds between /api/status requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A keep-alive HTTP connection to the Jupyter server, with the token."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body)
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        return response.status, json.loads(response.read() or b"null")


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_until_up(port: int, path: str, timeout: float = 90.0, hint: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = Client(port).call("GET", path)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"no answer from 127.0.0.1:{port}{path} after {timeout:.0f} s {hint}")


def poll_status(port: int, keep_going: threading.Event | None, seconds: float) -> list[float]:
    """Latencies (ms) of ``GET /api/status`` while ``keep_going`` is set (else for ``seconds``)."""
    client, latencies = Client(port), []
    end = time.monotonic() + seconds
    while keep_going.is_set() if keep_going else time.monotonic() < end:
        started = time.perf_counter()
        status, _ = client.call("GET", "/api/status")
        latencies.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
        time.sleep(POLL_GAP)
    return latencies


def run_benchmark(port: int, request: dict, outcome: dict, running: threading.Event) -> None:
    try:
        outcome["started"] = time.perf_counter()
        outcome["status"], outcome["result"] = Client(port).call(
            "POST", "/offgrid/v1/benchmark", request
        )
        outcome["seconds"] = time.perf_counter() - outcome["started"]
    finally:
        running.clear()


def search_rate(port: int, clients: int, total: int) -> tuple[float, float]:
    """(requests/s, p50 ms) of a cached ``GET /offgrid/v1/search`` from ``clients`` threads."""
    path = "/offgrid/v1/search?query=tiny&quantization=Q4_K_M&limit=5"
    latencies: list[float] = []

    def work() -> None:
        client = Client(port)
        for _ in range(total // clients):
            started = time.perf_counter()
            status, found = client.call("GET", path)
            latencies.append((time.perf_counter() - started) * 1000)
            assert status == 200, (status, found)
            assert found["total"] == 1, found

    threads = [threading.Thread(target=work) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.perf_counter() - started), float(np.median(latencies))


def row(label: str, latencies: list[float]) -> str:
    p50, p99 = np.percentile(latencies, [50, 99])
    return f"{label:<36}{len(latencies):>6}{p50:>9.1f}{p99:>9.1f}{max(latencies):>9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="baseline polling time")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--searches", type=int, default=400, help="search requests per run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="offgrid-responsiveness-") as tmp:
        root = Path(tmp)
        model = write_tiny_model(root / "models" / "bench" / f"{MODEL}.gguf", SPEC)
        model_mb = model.stat().st_size / 1e6
        build_demo_hub(root / "hub")
        mirror_port, jupyter_port = free_port(), free_port()
        env = {
            **os.environ,
            "OFFGRID_MODELS_DIR": str(root / "models"),
            "OFFGRID_CACHE_DIR": str(root / "cache"),
            "HF_HOME": str(root / "hf"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_ENDPOINT": f"http://127.0.0.1:{mirror_port}",
        }
        mirror = start(
            [sys.executable, "-m", "offgrid_nb.cli", "mirror", str(root / "hub"),
             "--port", str(mirror_port)],
            env,
        )  # fmt: skip
        jupyter = start(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1",
             f"--port={jupyter_port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             "--allow-root"],  # containers often run as root
            env,
        )  # fmt: skip
        try:
            wait_until_up(jupyter_port, "/api/status")
            enabled = "(is offgrid_nb enabled? see `jupyter server extension list`)"
            wait_until_up(jupyter_port, "/offgrid/v1/health", timeout=10, hint=enabled)

            idle = poll_status(jupyter_port, None, args.idle_seconds)
            request = {
                "model": MODEL,
                "prompt_tokens": args.prompt_tokens,
                "output_tokens": args.output_tokens,
                "iterations": args.iterations,
            }
            outcome: dict = {}
            running = threading.Event()
            running.set()
            worker = threading.Thread(
                target=run_benchmark, args=(jupyter_port, request, outcome, running)
            )
            worker.start()
            during = poll_status(jupyter_port, running, 0)
            worker.join()
            assert outcome["status"] == 200, outcome
            results = outcome["result"]["results"]

            Client(jupyter_port).call("GET", "/offgrid/v1/search?query=tiny")  # warm the cache
            rates = {n: search_rate(jupyter_port, n, args.searches) for n in (1, 4)}
        finally:
            for process in (jupyter, mirror):
                process.terminate()
                process.wait(timeout=30)

    print(f"model: {model.name}, {model_mb:.0f} MB F32 ({SPEC.n_layers} layers, "
          f"{SPEC.n_embd} wide); {os.cpu_count()} CPUs")  # fmt: skip
    print(
        f"benchmark: {args.prompt_tokens} prompt + {args.output_tokens} output tokens x "
        f"{args.iterations} (+1 warm-up) in {outcome['seconds']:.1f} s; "
        f"{results['avg_prompt_tokens_per_sec']:.0f} / "
        f"{results['avg_generation_tokens_per_sec']:.0f} tokens/s (prompt / generation)\n"
    )
    print(f"{'GET /api/status':<36}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    print(row("  idle (baseline)", idle))
    print(row("  during POST /v1/benchmark", during))
    print(f"\n{'GET /v1/search, cached query':<36}{'req/s':>8}{'p50 ms':>9}")
    for clients, (rate, p50) in rates.items():
        print(f"  {clients} client{'s' if clients > 1 else '':<28}{rate:>9.0f}{p50:>9.1f}")
    p99 = float(np.percentile(during, 99))
    print(f"\ntarget p99 < 100 ms during the benchmark: {'met' if p99 < 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
