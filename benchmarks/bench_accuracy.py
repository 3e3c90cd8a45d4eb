"""Are ``offgrid_nb.benchmark``'s figures right? Held against llama-bench, or a raw llama.cpp loop.

On the real model (google/gemma-3-270m Q4_K_M, from the demo extra; else a generated model
large enough that one token takes well over a millisecond), the same tests are timed by
``benchmark(..., llama_bench=True)`` and by the reference: a ``llama-bench`` binary when one is
on PATH (or given with ``--llama-bench``), else a loop on llama.cpp's C API (``_reference.py``).
Same threads, flash attention off on both, the same depth: ``pp{P} @ d{D}`` and
``tg{O} @ d{D}``, each from a cache filled with D tokens, as llama-bench runs them. Rounds
alternate between the two; medians are reported. Target: within 10%.

Build llama-bench from the same llama.cpp that llama-cpp-python bundles (its sdist's
``vendor/llama.cpp``): ``cmake -B build -DLLAMA_CURL=OFF && cmake --build build --target
llama-bench``.

    python benchmarks/bench_accuracy.py [--prompt-tokens 512] [--output-tokens 128]
        [--depth 0] [--runs 5] [--model real|generated] [--llama-bench PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from _reference import ReferenceDecoder, measured_model

from offgrid_nb import bundled_model
from offgrid_nb.bench import benchmark
from offgrid_nb.engine import default_threads, unload_model


def llama_bench_run(binary: str, path: Path, args: argparse.Namespace, threads: int) -> list[float]:
    """One llama-bench invocation (its own warm-up, one repetition): [pp t/s, tg t/s]."""
    command = [
        binary, "-m", str(path), "-p", str(args.prompt_tokens), "-n", str(args.output_tokens),
        "-d", str(args.depth), "-t", str(threads), "-fa", "0", "-r", "1", "-o", "json",
    ]  # fmt: skip
    results = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    by_kind = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in results}
    return [by_kind["pp"], by_kind["tg"]]


def loop_run(path: Path, args: argparse.Namespace, threads: int) -> list[float]:
    """One warm-up and one timed iteration of the C-API loop: [pp t/s, tg t/s]."""
    n_ctx = args.depth + args.prompt_tokens + args.output_tokens + 1
    decoder = ReferenceDecoder(path, n_ctx=n_ctx, n_threads=threads)
    rng = np.random.default_rng(0)
    try:
        for _ in range(2):
            decoder.clear()
            if args.depth:
                decoder.prompt(rng.integers(0, decoder.n_vocab, args.depth).tolist())
            tokens = rng.integers(0, decoder.n_vocab, args.prompt_tokens).tolist()
            token, prompt_s = decoder.prompt(tokens)
            decoder.clear()
            if args.depth:
                decoder.prompt(rng.integers(0, decoder.n_vocab, args.depth).tolist())
            gen_s = decoder.generate(token, args.output_tokens)
    finally:
        decoder.close()
    return [args.prompt_tokens / prompt_s, args.output_tokens / gen_s]


def ours_run(path: Path, args: argparse.Namespace, threads: int) -> list[float]:
    """One warm-up and one timed iteration of ``benchmark()``: [pp t/s, tg t/s]."""
    result = benchmark(
        path,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        iterations=1,
        n_threads=threads,
        depth=args.depth,
        llama_bench=True,
    )
    unload_model()
    runs = result.runs
    return [runs["prompt_tokens_per_sec"][0], runs["generation_tokens_per_sec"][0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--depth", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", choices=["real", "generated"], default="real")
    parser.add_argument("--llama-bench", default=shutil.which("llama-bench"), metavar="PATH")
    args = parser.parse_args()
    threads = default_threads()

    with tempfile.TemporaryDirectory() as tmp:
        path = bundled_model.bundled_model_path() if args.model == "real" else None
        label = "gemma-3-270m Q4_K_M (real)"
        if path is None:
            path, label = measured_model(Path(tmp), "Q8_0"), "generated 8x1024 Q8_0"
        if args.llama_bench:
            reference, ref_name = (
                lambda: llama_bench_run(args.llama_bench, path, args, threads),
                "llama-bench",
            )
        else:
            reference, ref_name = lambda: loop_run(path, args, threads), "C-API loop"
        ours, ref = [], []
        for _ in range(args.runs):  # interleaved: a noisy neighbour slows both sides alike
            ours.append(ours_run(path, args, threads))
            ref.append(reference())

    depth = f" @ d{args.depth}" if args.depth else ""
    print(f"model: {label}; {threads} threads; flash attention off; {args.runs} rounds, medians")
    print(f"{'test':<14}{ref_name + ' t/s':>18}{'offgrid_nb t/s':>18}{'ratio':>8}")
    for i, test in enumerate((f"pp{args.prompt_tokens}", f"tg{args.output_tokens}")):
        mine, theirs = [r[i] for r in ours], [r[i] for r in ref]
        ratio = statistics.median(mine) / statistics.median(theirs)
        print(
            f"{test + depth:<14}{statistics.median(theirs):>18.1f}"
            f"{statistics.median(mine):>18.1f}{ratio:>8.3f}"
        )


if __name__ == "__main__":
    main()
