"""``offgrid demo``: the main job, offline, on a model generated on the spot.

It writes a tiny random-weight model in two quantizations, serves it with our Hub mirror on
loopback, and goes through the public API exactly as a user would: search -> download -> chat
-> benchmark, printing each step.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .bench import benchmark
from .chat import Chat
from .config import settings_override
from .download import download
from .engine import unload_model
from .hub import search
from .mirror import MirrorServer
from .render import ProgressPrinter, benchmark_table, search_blocks
from .synthetic import quantize, write_tiny_model

DEMO_REPO = "offgrid-demo/Tiny-Llama-Chat-GGUF"
DEMO_QUANTS = ("Q4_K_M", "Q8_0")


def build_demo_hub(root: Path) -> str:
    """Lay out a Hub folder with one chat repo in several quantizations; return its id."""
    folder = root / DEMO_REPO
    source = write_tiny_model(root / ".source" / "tiny-llama-chat-F32.gguf")
    for quant in DEMO_QUANTS:
        quantize(source, folder / f"tiny-llama-chat.{quant}.gguf", quant)
    (folder / "repo.json").write_text(
        json.dumps({"downloads": 1234, "likes": 5, "tags": ["conversational", "llama"]})
    )
    return DEMO_REPO


def _step(number: int, title: str) -> None:
    print(f"\n[{number}] {title}", flush=True)


def run_demo(*, keep: bool = False) -> None:
    """Run the demo in a temporary folder (kept with ``keep=True``)."""
    tmp = Path(tempfile.mkdtemp(prefix="offgrid-demo-"))
    started = time.perf_counter()
    _step(1, "Generating a tiny llama model and serving it as a Hub mirror")
    repo_id = build_demo_hub(tmp / "hub")
    with (
        MirrorServer(tmp / "hub") as server,
        settings_override(endpoint=server.url, models_dir=tmp / "models", offline=False),
    ):
        print(f"Mirror: {server.url} (set HF_ENDPOINT to this to use it)")
        _step(2, "offgrid search tiny-llama")
        results = search("tiny-llama", limit=5)
        print(search_blocks(results))
        _step(3, f"offgrid download-hf {repo_id} (the recommended file, resumable and verified)")
        path = download(repo_id, results.iloc[0].best_file, progress=ProgressPrinter(sys.stdout))
        print(f"Model saved to: {path}")
        _step(4, f"offgrid run {path.stem}  (one turn; random weights answer gibberish)")
        chat = Chat(path, max_tokens=24, seed=0)
        print("You: Hello! Who are you?")
        print("Assistant: ", end="", flush=True)
        for piece in chat.stream("Hello! Who are you?"):
            print(piece, end="", flush=True)
        usage = chat.usage
        print(f"\n({usage.completion_tokens} tokens, {usage.tokens_per_second:.0f} tokens/s)")
        _step(5, f"offgrid benchmark {path.stem} --prompt-tokens 128 --output-tokens 32")
        print(benchmark_table(benchmark(path, prompt_tokens=128, output_tokens=32, iterations=2)))
        unload_model()
    print(f"\nDemo finished in {time.perf_counter() - started:.1f} s (repo {repo_id}).")
    if keep:
        print(f"Files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
