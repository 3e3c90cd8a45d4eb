"""Soak test of ``offgrid serve``: many clients for a while, then did anything leak or stick?

A real ``offgrid serve`` (subprocess, loopback only, a generated model in a temporary models
folder) gets ``--clients`` threads for ``--rounds`` rounds of ``--seconds`` each. Each client
loops over a mix of requests until its round's time is up (bounded: every request has a
timeout, every loop a deadline): ``/v1/chat/completions`` whole and streamed,
``/api/chat`` and ``/api/generate`` streamed (NDJSON), streams cut after their first chunk,
``/v1/embeddings`` and ``/api/embed`` (with the chat model, embedded in its own context; with
``--embedding-model``, a second generated model loaded beside it). Printed per round:
requests, status counts, p50/p99 of the whole request and of the time to first byte of
streams, the server's RSS at the start and end. Then: RSS growth per 10,000 requests after
the first round (the warm-up), whether a greedy probe reply changed, and how long after the
last client the slots and queue were free.

The baseline in the same run: one client alone, ``--probe-requests`` chat requests, median
reply time; the target for p99 time to first token is ``(clients / slots + 1)`` times that.

Run from the repository root: ``python benchmarks/soak.py --clients 24 --seconds 60
--rounds 5``. Not a test. On a shared machine the latencies are noisy; the counts and the RSS
are what to read.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

from offgrid_nb.synthetic import TinyModelSpec, write_tiny_model

MODEL = "soak-llama"
EMBEDDER = "soak-embedder"  # --embedding-model: a second model, loaded beside the chat model
TIMEOUT = 120.0  # seconds: no request of this mix should take longer, even queued
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello there"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``offgrid serve`` in a subprocess on a free loopback port."""

    def __init__(self, models: Path, parallel: int) -> None:
        self.port = free_port()
        env = {**os.environ, "OFFGRID_MODELS_DIR": str(models), "OFFGRID_SOURCES": "offgrid"}
        command = [sys.executable, "-c", "from offgrid_nb.cli import main; main()", "serve"]
        command += ["--port", str(self.port), "--parallel", str(parallel)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "offgrid API on ...": listening
        self.ps = psutil.Process(self.process.pid)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            data = None if body is None else json.dumps(body)
            connection.request(method, path, body=data)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _requests(
    max_tokens: int, embeddings: bool, embedder: str = MODEL
) -> list[tuple[str, str, dict, bool, bool]]:
    """(name, path, body, streamed, cut after the first chunk) of the mix, in rotation."""
    sampled = {"temperature": 0.7, "max_tokens": max_tokens}
    options = {"temperature": 0.7, "num_predict": max_tokens}
    mix = [
        ("v1-chat", "/v1/chat/completions", {**CHAT, **sampled}, False, False),
        ("v1-stream", "/v1/chat/completions", {**CHAT, **sampled, "stream": True}, True, False),
        ("api-chat", "/api/chat", {**CHAT, "options": options}, True, False),
        ("v1-cut", "/v1/chat/completions", {**CHAT, **sampled, "stream": True}, True, True),
        ("api-generate", "/api/generate", {"model": MODEL, "prompt": "hi", "options": options},
         True, False),
        ("api-cut", "/api/chat", {**CHAT, "options": options}, True, True),
    ]  # fmt: skip
    if embeddings:
        mix += [
            ("v1-embed", "/v1/embeddings", {"model": embedder, "input": ["a text", "another"]},
             False, False),
            ("api-embed", "/api/embed", {"model": embedder, "input": "some text"}, False, False),
        ]  # fmt: skip
    return mix


def one_request(port: int, path: str, body: dict, cut: bool) -> tuple[int, float, float]:
    """(status, seconds to the first body byte, seconds in all); a cut stream is closed
    after its first chunk."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("POST", path, body=json.dumps(body))
        response = connection.getresponse()
        first = response.read1(65536) if not response.closed else b""
        ttfb = time.perf_counter() - started
        if not cut or not first:
            response.read()
        return response.status, ttfb, time.perf_counter() - started
    except (OSError, http.client.HTTPException):
        return 0, 0.0, time.perf_counter() - started
    finally:
        connection.close()


def client(port: int, mix: list, start: int, deadline: float, results: list) -> None:
    for name, path, body, streamed, cut in itertools.islice(
        itertools.cycle(mix), start, None
    ):  # bounded by the deadline and each request's timeout
        if time.perf_counter() >= deadline:
            return
        status, ttfb, total = one_request(port, path, body, cut)
        results.append((name, status, ttfb if streamed else None, total))


def probe(server: Server) -> str:
    body = {**CHAT, "temperature": 0, "max_tokens": 24, "seed": 1}
    status, data = server.call("POST", "/v1/chat/completions", body)
    return data["choices"][0]["message"]["content"] if status == 200 else f"status {status}"


def free_after(server: Server) -> float | None:
    """Seconds until /v1/health shows no busy slot and no queued request (None: not in 10 s)."""
    started = time.perf_counter()
    while time.perf_counter() - started < 10:
        _, health = server.call("GET", "/v1/health")
        slots = health.get("slots", {})
        if not slots.get("busy") and not slots.get("queued"):
            return time.perf_counter() - started
        time.sleep(0.05)
    return None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=60.0, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=4, help="the server's slots")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--no-embeddings", action="store_true")
    parser.add_argument("--probe-requests", type=int, default=20)
    parser.add_argument(
        "--embedding-model", action="store_true", help="embeddings with a second model"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        write_tiny_model(models / f"{MODEL}.gguf")
        embedder = EMBEDDER if args.embedding_model else MODEL
        if args.embedding_model:
            write_tiny_model(models / f"{EMBEDDER}.gguf", TinyModelSpec(seed=7))
        server = Server(models, args.parallel)
        try:
            before = probe(server)
            single = [
                one_request(server.port, "/v1/chat/completions",
                            {**CHAT, "temperature": 0.7, "max_tokens": args.max_tokens}, False)[2]
                for _ in range(args.probe_requests)
            ]  # fmt: skip
            single_s = float(np.median(single))
            print(f"single client: median reply {single_s * 1000:.1f} ms")
            mix = _requests(args.max_tokens, not args.no_embeddings, embedder)
            ends: list[tuple[int, float]] = []
            header = "round  requests  statuses                 p50 ms  p99 ms  ttfb p99  RSS MB"
            print(header)
            for number in range(1, args.rounds + 1):
                rss_start, results = server.rss_mb(), []
                deadline = time.perf_counter() + args.seconds
                threads = [
                    threading.Thread(target=client, args=(server.port, mix, i, deadline, results))
                    for i in range(args.clients)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                free_s = free_after(server)
                rss_end = server.rss_mb()
                statuses = Counter(status for _, status, _, _ in results)
                totals = [total for *_, total in results]
                ttfbs = [t for _, _, t, _ in results if t is not None]
                ends.append((len(results), rss_end))
                print(
                    f"{number:5}  {len(results):8}  {dict(sorted(statuses.items()))!s:23}  "
                    f"{percentile(totals, 50):6.0f}  {percentile(totals, 99):6.0f}  "
                    f"{percentile(ttfbs, 99):8.0f}  {rss_start:.1f} -> {rss_end:.1f}  "
                    f"(slots and queue free {free_s if free_s is None else round(free_s, 2)} s "
                    "after the last client)",
                    flush=True,
                )
            after = probe(server)
            loaded = [model["name"] for model in server.call("GET", "/v1/ps")[1]["models"]]
            print(f"loaded at the end: {', '.join(loaded)}")
        finally:
            server.stop()
    if len(ends) > 1:
        served = sum(count for count, _ in ends[1:])
        growth = (ends[-1][1] - ends[0][1]) / served * 10_000 if served else float("nan")
        print(f"RSS growth after round 1: {growth:.2f} MB per 10,000 requests ({served} requests)")
    target = (args.clients / args.parallel + 1) * single_s * 1000
    print(f"p99 TTFT target: (clients/slots + 1) x single reply = {target:.0f} ms")
    print(f"greedy probe reply {'unchanged' if before == after else 'CHANGED'}: {before!r}")


if __name__ == "__main__":
    main()
