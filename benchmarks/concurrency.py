"""Many clients, one model: aggregate tokens/s and first-token latency at 1, 2, 4, 8 at once.

Servers, each a subprocess on 127.0.0.1, same model, same threads, flash attention off:

- ``offgrid serve --parallel 1``: one generation at a time (the baseline: what we had);
- ``offgrid serve --parallel 4``: parallel slots (offgrid_nb.batching);
- with ``--before DIR``, the ``offgrid serve`` of an older tree (today's one-at-a-time code);
- ``llama-server -np 4`` when a binary is found (``--llama-server PATH``, else on PATH), built
  from the same llama-cpp-python sdist's ``vendor/llama.cpp`` (target ``llama-server``).

Each measurement: N clients at once, each streaming one ``/v1/completions`` of 64 tokens at
temperature 0 from its own prompt; aggregate tokens/s = all tokens / wall time, first token =
median over the clients of the time to their first text. Rounds interleave the servers and
concurrency levels; the table gives medians over rounds and ratios to the baseline and to
llama-server.

    python benchmarks/concurrency.py [--model PATH] [--rounds 5] [--llama-server PATH]

``--kv-layouts`` adds the other KV layout on each side: ``offgrid serve --parallel 4`` with
``OFFGRID_KV_UNIFIED=1`` (one buffer for all slots, llama-server's default) and ``llama-server
-np 4 --no-kv-unified`` (a stream per slot, our default).

Default model: the real one (google/gemma-3-270m Q4_K_M, ``offgrid_nb.bundled_model``).
Context: ``--ctx`` tokens per slot on every server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import platformdirs

from offgrid_nb import bundled_model

PROMPTS = [
    "The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):",
    "The three laws of robotics are", "Water boils at", "My favourite recipe is",
    "In 1492, Columbus", "The quick brown fox",
]  # fmt: skip
LEVELS = (1, 2, 4, 8)
LLAMA_SERVER = "llama-server -np 4"  # its default KV layout: one buffer for all slots


class Server:
    """A server subprocess on a free loopback port; ``close()`` ends it."""

    def __init__(
        self, name: str, command: list[str], port: int, env: dict[str, str], cwd: Path | None = None
    ) -> None:
        self.name, self.port = name, port
        self.log = Path(tempfile.mkstemp(prefix="concurrency-", suffix=".log")[1])
        with self.log.open("wb") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start: see {self.log}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/v1/models")
            return connection.getresponse().status == 200
        except OSError:
            return False

    def complete(self, model: str, prompt: str, tokens: int) -> tuple[float | None, int]:
        """Stream one completion; return (seconds to the first text, tokens generated)."""
        body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0}
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        started = time.perf_counter()
        headers = {"Content-Type": "application/json"}
        connection.request("POST", "/v1/completions", json.dumps(body), headers)
        response = connection.getresponse()
        first, count, pieces = None, None, 0
        for line in response:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                first = first or time.perf_counter() - started
                pieces += 1
            if chunk.get("usage"):
                count = chunk["usage"]["completion_tokens"]
        return first, count if count is not None else pieces

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(server: Server, model: str, clients: int, tokens: int) -> tuple[float, float]:
    """N clients at once: (aggregate tokens/s, median seconds to the first text)."""
    results: list[tuple[float | None, int]] = [(None, 0)] * clients

    def client(i: int) -> None:
        results[i] = server.complete(model, PROMPTS[i % len(PROMPTS)], tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    firsts = [first for first, _ in results if first is not None]
    return sum(count for _, count in results) / wall, statistics.median(firsts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF file (default: the real model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=1024, help="context per slot")
    parser.add_argument("--llama-server", type=Path, help="default: llama-server on PATH")
    parser.add_argument(
        "--kv-layouts",
        action="store_true",
        help="also the other KV layout on each side: offgrid with OFFGRID_KV_UNIFIED=1, "
        "llama-server with --no-kv-unified (a KV stream per slot, as ours by default)",
    )
    parser.add_argument(
        "--before", type=Path, help="also serve an older offgrid_nb tree (e.g. `git archive`)"
    )
    args = parser.parse_args()
    model = args.model or bundled_model.bundled_model_path(
        Path(platformdirs.user_cache_dir("offgrid_nb"))
    )
    if model is None:
        raise SystemExit(f"no model: pass --model ({bundled_model.INSTALL_HINT})")
    binary = args.llama_server or (
        shutil.which("llama-server") and Path(shutil.which("llama-server"))
    )
    folder = Path(tempfile.mkdtemp(prefix="concurrency-models-"))
    (folder / "local").mkdir()
    (folder / "local" / model.name).symlink_to(model.resolve())
    name = model.name.removesuffix(".gguf")
    env = {**os.environ, "OFFGRID_MODELS_DIR": str(folder), "OFFGRID_MAX_CTX": str(args.ctx)}
    ours = [sys.executable, "-m", "offgrid_nb.cli", "serve", "--threads", str(args.threads)]
    servers = []
    try:
        for parallel in (1, 4):
            port = free_port()
            command = [*ours, "--port", str(port), "--parallel", str(parallel)]
            servers.append(Server(f"offgrid -parallel {parallel}", command, port, env))
        if args.kv_layouts:
            port = free_port()
            command = [*ours, "--port", str(port), "--parallel", "4"]
            unified = {**env, "OFFGRID_KV_UNIFIED": "1"}
            servers.append(Server("offgrid -parallel 4 unified", command, port, unified))
        if args.before:  # its own `offgrid serve` (no --parallel, threads: physical cores)
            port = free_port()
            before_env = {**env, "PYTHONPATH": str(args.before)}
            command = [sys.executable, "-m", "offgrid_nb.cli", "serve", "--port", str(port)]
            # run from that tree: `python -m` puts the working directory first on the path
            servers.append(Server("offgrid before", command, port, before_env, args.before))
        if binary:
            lib = str(Path(binary).resolve().parent)
            server_env = {**env, "LD_LIBRARY_PATH": lib}
            layouts = {LLAMA_SERVER: []}
            if args.kv_layouts:
                layouts = {f"{LLAMA_SERVER} streams": ["--no-kv-unified"], **layouts}
            for label, extra in layouts.items():
                port = free_port()
                command = [
                    str(binary), "-m", str(model), "-np", "4", "-c", str(4 * args.ctx),
                    "-t", str(args.threads), "-tb", str(args.threads), "-fa", "off",
                    "--host", "127.0.0.1", "--port", str(port), *extra,
                ]  # fmt: skip
                servers.append(Server(label, command, port, server_env))
        for server in servers:  # warm up: load the model, touch the weights
            measure(server, name, 4, 8)
        rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            for clients in LEVELS:
                order = servers if round_ % 2 == 0 else servers[::-1]
                for server in order:
                    rows.setdefault((server.name, clients), []).append(
                        measure(server, name, clients, args.tokens)
                    )
        report(rows, servers, args, model, binary is not None)
    finally:
        for server in servers:
            server.close()
        shutil.rmtree(folder, ignore_errors=True)


def report(rows, servers, args, model, binary: bool) -> None:
    print(f"model {model.name}, {args.threads} threads, {args.tokens} tokens per client, "
          f"{args.ctx} context per slot, medians of {args.rounds} interleaved rounds")  # fmt: skip
    header = f"{'server':<28}{'clients':>8}{'tok/s':>9}{'1st tok ms':>12}{'x base':>8}"
    reference = LLAMA_SERVER if binary else None
    names = [server.name for server in servers]
    baseline = "offgrid before" if "offgrid before" in names else names[0]
    print(f"x base: against {baseline}")
    print(header + (f"{'x llama-server':>16}" if reference else ""))
    median = {k: (statistics.median(a for a, _ in v), statistics.median(f for _, f in v))
              for k, v in rows.items()}  # fmt: skip
    for clients in LEVELS:
        base = median[(baseline, clients)][0]
        for server in servers:
            speed, first = median[(server.name, clients)]
            line = f"{server.name:<28}{clients:>8}{speed:>9.1f}{first * 1000:>12.0f}"
            line += f"{speed / base:>8.2f}"
            if reference:
                line += f"{speed / median[(reference, clients)][0]:>16.2f}"
            print(line)


if __name__ == "__main__":
    main()
