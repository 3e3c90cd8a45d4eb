"""What the Ollama-compatible API costs per token, against ``/v1/chat/completions``.

``offgrid serve`` runs in its own process over a models folder holding the real model (the
demo extra's google/gemma-3-270m; else a generated one); the same greedy chat request is
streamed through ``POST /api/chat`` (NDJSON) and ``POST /v1/chat/completions`` (server-sent
events) in alternating rounds, and the client's wall time per received token compared
(medians). Target: ``/api/chat`` within 5% of ``/v1``.

    python benchmarks/ollama_overhead.py [--rounds 7] [--tokens 96]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from offgrid_nb import bundled_model
from offgrid_nb.synthetic import write_tiny_model

QUESTION = [{"role": "user", "content": "Write a long story about the sea."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ollama_round(url: str, model: str, tokens: int) -> tuple[float, int]:
    body = {"model": model, "messages": QUESTION, "stream": True,
            "options": {"temperature": 0, "num_predict": tokens}}  # fmt: skip
    started, count = time.perf_counter(), 0
    with httpx.stream("POST", f"{url}/api/chat", json=body, timeout=300) as response:
        for line in response.iter_lines():
            part = json.loads(line)
            if part.get("done"):
                count = part["eval_count"]
    return time.perf_counter() - started, count


def openai_round(url: str, model: str, tokens: int) -> tuple[float, int]:
    body = {"model": model, "messages": QUESTION, "stream": True, "temperature": 0,
            "max_tokens": tokens, "stream_options": {"include_usage": True}}  # fmt: skip
    started, count = time.perf_counter(), 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            data = line.removeprefix("data: ")
            if line.startswith("data: ") and data != "[DONE]" and json.loads(data).get("usage"):
                count = json.loads(data)["usage"]["completion_tokens"]
    return time.perf_counter() - started, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--parallel", type=int, default=4, help="offgrid serve --parallel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "models" / "local"
        folder.mkdir(parents=True)
        real = bundled_model.bundled_model_path()
        if real is not None:
            shutil.copyfile(real, folder / real.name)
            model = real.stem
        else:
            model = write_tiny_model(folder / "tiny-llama-F32.gguf").stem
        port = _free_port()
        env = {**os.environ, "OFFGRID_MODELS_DIR": str(Path(tmp) / "models")}
        server = subprocess.Popen(
            [sys.executable, "-m", "offgrid_nb.cli", "serve", "--port", str(port),
             "--parallel", str(args.parallel)],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            server.stdout.readline()
            url = f"http://127.0.0.1:{port}"
            ollama_round(url, model, 8)  # load the model, warm up
            per_token: dict[str, list[float]] = {"/v1/chat/completions": [], "/api/chat": []}
            for _ in range(args.rounds):
                for name, run in (
                    ("/v1/chat/completions", openai_round),
                    ("/api/chat", ollama_round),
                ):
                    seconds, count = run(url, model, args.tokens)
                    per_token[name].append(seconds / max(count, 1) * 1000)
        finally:
            server.terminate()
            server.wait(timeout=20)
    base = statistics.median(per_token["/v1/chat/completions"])
    print(
        f"model: {model}; {args.tokens} tokens per reply; {args.rounds} alternating rounds; "
        f"--parallel {args.parallel}"
    )
    print(f"{'endpoint':<24}{'ms/token (median)':>20}{'ratio':>8}")
    for name, values in per_token.items():
        print(
            f"{name:<24}{statistics.median(values):>20.2f}{statistics.median(values) / base:>8.3f}"
        )


if __name__ == "__main__":
    main()
