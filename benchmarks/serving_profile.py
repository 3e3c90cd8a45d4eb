"""Where an ``offgrid serve`` process's CPU goes per generated token, by thread, under N clients.

Starts ``offgrid serve --parallel 4`` on the real model (as ``benchmarks/concurrency.py``),
with a ``sitecustomize`` that gives each Python thread its name at the OS level (Linux), then
runs ``--rounds`` bursts of N streaming ``/v1/completions`` clients and reads every thread's
CPU time (psutil, polled while they run: the per-request threads end with their request).

Threads: ``offgrid-slots`` is the scheduler (``llama_decode``, sampling) together with
llama.cpp's OpenMP workers (a new thread takes its creator's name); ``offgrid-run_rep`` are the
per-request threads that read ``job.events``; ``python`` is the IOLoop (HTTP, SSE, JSON).
No py-spy: its native sampling pauses the process and counts threads blocked on a lock as busy.

    python benchmarks/serving_profile.py [--clients 4] [--rounds 4]

Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import platformdirs
import psutil

from offgrid_nb import bundled_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import PROMPTS, Server, free_port

NAME_THREADS = """
import ctypes, threading
_libc = ctypes.CDLL(None)
_libc.pthread_self.restype = ctypes.c_ulong
_libc.pthread_setname_np.argtypes = [ctypes.c_ulong, ctypes.c_char_p]
_run = threading.Thread._bootstrap_inner
def _named(self):
    _libc.pthread_setname_np(_libc.pthread_self(), self.name.encode()[:15])
    _run(self)
threading.Thread._bootstrap_inner = _named
"""


def thread_times(process: psutil.Process) -> dict[int, tuple[str, float]]:
    """Each live thread's id -> (its OS name, CPU seconds so far)."""
    times = {}
    for thread in process.threads():
        try:
            name = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            continue  # it ended meanwhile
        times[thread.id] = (name, thread.user_time + thread.system_time)
    return times


def burst(server: Server, model: str, clients: int, tokens: int) -> tuple[int, list[float]]:
    """N clients at once: the tokens generated and each client's seconds to its first text."""
    results: list[tuple[float | None, int]] = [(None, 0)] * clients

    def client(i: int) -> None:
        results[i] = server.complete(model, PROMPTS[i % len(PROMPTS)], tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(n for _, n in results), [first for first, _ in results if first is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    model = bundled_model.bundled_model_path(Path(platformdirs.user_cache_dir("offgrid_nb")))
    if model is None:
        raise SystemExit(f"no model ({bundled_model.INSTALL_HINT})")
    with tempfile.TemporaryDirectory() as tmp:
        folder, site = Path(tmp) / "models", Path(tmp) / "site"
        (folder / "local").mkdir(parents=True)
        (folder / "local" / model.name).symlink_to(model.resolve())
        site.mkdir()
        (site / "sitecustomize.py").write_text(NAME_THREADS)
        path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "OFFGRID_MODELS_DIR": str(folder)}
        port = free_port()
        command = [sys.executable, "-m", "offgrid_nb.cli", "serve", "--threads", "2"]
        server = Server("offgrid", [*command, "--port", str(port), "--parallel", "4"], port, env)
        try:
            profile(server, model.name.removesuffix(".gguf"), args)
        finally:
            server.close()


def profile(server: Server, model: str, args: argparse.Namespace) -> None:
    burst(server, model, 4, 8)  # loaded, warm
    process = psutil.Process(server.process.pid)
    start, seen, done = thread_times(process), {}, threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.update(thread_times(process))
            time.sleep(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    cpu, wall = sum(process.cpu_times()[:2]), time.perf_counter()
    tokens, firsts = 0, []
    for _ in range(args.rounds):
        count, first = burst(server, model, args.clients, args.tokens)
        tokens, firsts = tokens + count, firsts + first
    cpu, wall = sum(process.cpu_times()[:2]) - cpu, time.perf_counter() - wall
    done.set()
    poller.join()
    first = statistics.median(firsts) * 1000
    print(f"{args.clients} clients x {args.rounds} rounds: {tokens} tokens, "
          f"{tokens / wall:.1f} tok/s, first token median {first:.0f} ms")  # fmt: skip
    print(f"process CPU {cpu:.2f} s: {cpu / tokens * 1000:.3f} ms per token")
    by_name: dict[str, float] = defaultdict(float)
    for tid, (name, seconds) in seen.items():
        by_name[name] += seconds - start.get(tid, (name, 0.0))[1]
    for name, seconds in sorted(by_name.items(), key=lambda item: -item[1]):
        share = seconds / cpu if cpu else 0.0
        per_token = seconds / tokens * 1000
        print(f"  {name:16} {seconds:8.2f} s  {per_token:8.3f} ms/token  {share:6.1%}")


if __name__ == "__main__":
    main()
