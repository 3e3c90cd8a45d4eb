"""Search latency against a slow Hub: ours vs the sequential N+1 baseline, and the cache.

The mirror adds 100 ms to every request (a slow link). The baseline is what a naive client
does (OffGrid LLM does exactly this): one list call, then one model_info call per repo, one
after another. Ours: concurrent per-repo calls in a bounded pool, cheap filters first. The
mirror runs in its own process, as a remote Hub would (no GIL shared with the client).

    python benchmarks/search_latency.py [--latency-ms 100] [--repos 40] [--limit 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

from huggingface_hub import HfApi

import offgrid_nb
from offgrid_nb.config import settings_override

QUANTS = ("Q2_K", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")


def build_hub(root: Path, n_repos: int) -> None:
    for i in range(n_repos):
        folder = root / f"org{i % 7}" / f"Model{i}-7B-Instruct-GGUF"
        folder.mkdir(parents=True)
        (folder / "repo.json").write_text(json.dumps({"downloads": 1000 * (n_repos - i)}))
        for quant in QUANTS:
            (folder / f"Model{i}-7B-Instruct-{quant}.gguf").write_bytes(os.urandom(512))


@contextmanager
def mirror_process(root: str, latency_ms: float) -> Iterator[str]:
    """``offgrid mirror`` in its own process, as a remote Hub would be (no shared GIL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "offgrid_nb.cli", "mirror", root, "--port", str(port)]
    proc = subprocess.Popen([*command, "--latency-ms", str(latency_ms)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx2.get(f"{url}/api/models?limit=1", timeout=1)
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def count_requests(url: str, fn) -> int:
    """Requests ``fn`` makes, counted on the client side (huggingface_hub's session)."""
    from huggingface_hub.utils import get_session

    seen: list[object] = []
    hooks = get_session().event_hooks["request"]
    hooks.append(seen.append)
    try:
        fn()
    finally:
        hooks.remove(seen.append)
    return len(seen)


def baseline(endpoint: str, limit: int) -> int:
    """Sequential N+1: list, then model_info(files_metadata=True) per repo."""
    api = HfApi(endpoint=endpoint)
    listed = list(api.list_models(filter="gguf", sort="downloads", limit=limit))
    for info in listed:
        api.model_info(info.id, files_metadata=True)
    return len(listed)


def ours(limit: int) -> int:
    offgrid_nb.clear_cache()
    return len(offgrid_nb.search(limit=limit))


def timed(fn, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.mean(samples), statistics.stdev(samples) if runs > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--repos", type=int, default=40)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        build_hub(Path(tmp), args.repos)
        with (
            mirror_process(tmp, args.latency_ms) as url,
            settings_override(endpoint=url, offline=False),
        ):
            base_requests = count_requests(url, lambda: baseline(url, args.limit))
            ours_requests = count_requests(url, lambda: ours(args.limit))
            base_mean, base_sd = timed(lambda: baseline(url, args.limit), args.runs)
            ours_mean, ours_sd = timed(lambda: ours(args.limit), args.runs)
            cached_requests = count_requests(url, lambda: offgrid_nb.search(limit=args.limit))
            cached_mean, cached_sd = timed(lambda: offgrid_nb.search(limit=args.limit), args.runs)

    print(f"search(limit={args.limit}) over {args.repos} repos, {args.latency_ms:.0f} ms latency")
    print(f"{'method':<28}{'mean s':>9}{'sd s':>8}{'speed-up':>10}{'requests':>10}")
    rows = [
        ("sequential N+1 (baseline)", base_mean, base_sd, base_requests),
        ("offgrid_nb.search (cold)", ours_mean, ours_sd, ours_requests),
        ("offgrid_nb.search (cached)", cached_mean, cached_sd, cached_requests),
    ]
    for name, mean, sd, requests in rows:
        print(f"{name:<28}{mean:>9.3f}{sd:>8.3f}{base_mean / mean:>9.1f}x{requests:>10}")


if __name__ == "__main__":
    main()
