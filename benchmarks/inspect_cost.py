"""What reading a remote GGUF header costs, against downloading the whole file.

The file is a 5 GB-class model as far as the header goes: a generated llama model with a
150k-token vocabulary (a ~4 MB header with tokens, scores and types, the size real 7B models
have) and a chat template, padded to 5 GB with a hole (a sparse file: no disk used; repo.json
gives its sha256 so the mirror does not hash it). The mirror runs in its own process, as a
remote Hub would. Bytes and requests are counted on the client, in huggingface_hub's session
(response body bytes actually received). The download baseline is a plain streamed GET of the
whole file through the same session into nothing (no disk write), so it is the transfer alone.

    python benchmarks/inspect_cost.py [--size-gb 5] [--latency-ms 0] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2

# Not counted as inspection: huggingface_hub's once-a-process telemetry call to huggingface.co.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")

import huggingface_hub
from huggingface_hub import hf_hub_url
from huggingface_hub.utils import get_session
from search_latency import mirror_process

from offgrid_nb.config import settings_override
from offgrid_nb.gguf_info import inspect_gguf
from offgrid_nb.hub import clear_cache
from offgrid_nb.synthetic import TinyModelSpec, write_tiny_model

REPO, FILE = "bench/Big-7B-Instruct-GGUF", "Big-7B-Instruct-Q4_K_M.gguf"


class CountingTransport(httpx2.HTTPTransport):
    """Counts requests by path kind and the response body bytes received."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: Counter[str] = Counter()
        self.received = 0

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests["resolve" if "/resolve/" in request.url.path else "info"] += 1
        response = super().handle_request(request)
        response.stream = _Counted(response.stream, self)
        return response


class _Counted(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, owner: CountingTransport) -> None:
        self.inner = inner
        self.owner = owner

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.owner.received += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


def build_hub(root: Path, size: int) -> None:
    spec = TinyModelSpec(n_embd=64, n_head=4, n_head_kv=2, n_ff=128, extra_vocab=150_000)
    path = write_tiny_model(root / REPO / FILE, spec)
    os.truncate(path, size)
    (path.parent / "repo.json").write_text(json.dumps({"sha256": {FILE: "c" * 64}}))


def measure(transport: CountingTransport, fn: Callable[[], object]) -> tuple[float, int, Counter]:
    transport.requests.clear()
    transport.received = 0
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started, transport.received, Counter(transport.requests)


def download_all(url: str) -> None:
    with get_session().stream("GET", url) as response:
        response.raise_for_status()
        for _ in response.iter_bytes(1 << 20):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    transport = CountingTransport()
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(transport=transport, follow_redirects=True, timeout=None)
    )
    with tempfile.TemporaryDirectory() as tmp:
        size = int(args.size_gb * 1e9)
        build_hub(Path(tmp, "hub"), size)
        with mirror_process(str(Path(tmp, "hub")), args.latency_ms) as url:
            inspects, infos = [], []
            for run in range(args.runs):
                clear_cache()
                with settings_override(endpoint=url, cache_dir=Path(tmp, f"cache{run}")):
                    read = lambda: infos.append(inspect_gguf(REPO, FILE))  # noqa: E731
                    inspects.append(measure(transport, read))
            with settings_override(endpoint=url, cache_dir=Path(tmp, "cache0")):
                cached = measure(transport, lambda: inspect_gguf(REPO, FILE))
            file_url = hf_hub_url(REPO, FILE, endpoint=url)
            download = measure(transport, lambda: download_all(file_url))
    seconds = statistics.median(t for t, _, _ in inspects)
    _, fetched, requests = inspects[0]
    print(
        f"file: {size / 1e9:.2f} GB, header {infos[0].header_size / 1e6:.1f} MB "
        f"({infos[0].vocab_size:,} tokens), mirror latency {args.latency_ms:g} ms/request; "
        f"inspect time: median of {args.runs} cold runs"
    )
    print(f"{'':26}{'bytes fetched':>16}{'% of file':>11}{'requests':>20}{'time':>10}")
    rows = [
        ("inspect (cold cache)", fetched, requests, seconds),
        ("inspect (disk cache)", cached[1], cached[2], cached[0]),
        ("download whole file", download[1], download[2], download[0]),
    ]
    for name, n_bytes, reqs, secs in rows:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(reqs.items())) or "0"
        print(f"{name:26}{n_bytes:>16,}{100 * n_bytes / size:>10.3f}%{kinds:>20}{secs:>9.3f}s")
    print(
        f"inspect is {download[0] / seconds:.0f}x faster than the download and reads "
        f"{size / max(fetched, 1):.0f}x fewer bytes"
    )


if __name__ == "__main__":
    main()
