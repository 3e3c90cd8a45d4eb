"""Are ``offgrid_nb.benchmark``'s figures right? Compared with a raw llama.cpp loop.

On a generated model large enough that one token takes well over a millisecond, the same
prompt and output sizes and the same threads are timed by ``benchmark()`` and by a reference
loop on llama.cpp's C API (``_reference.py``). Target: prompt and generation tokens/s within
10% of the reference.

    python benchmarks/bench_accuracy.py [--prompt-tokens 256] [--output-tokens 32] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
from _reference import SPEC, ReferenceDecoder, measured_model

from offgrid_nb.bench import benchmark
from offgrid_nb.engine import default_threads, unload_model


def reference_run(decoder: ReferenceDecoder, args: argparse.Namespace) -> tuple[float, float]:
    """One warm-up and one timed iteration of the reference loop: (pp t/s, tg t/s)."""
    rng = np.random.default_rng(0)
    for _ in range(2):
        decoder.clear()
        tokens = rng.integers(0, decoder.n_vocab, args.prompt_tokens).tolist()
        token, prompt_s = decoder.prompt(tokens)
        gen_s = decoder.generate(token, args.output_tokens)
    return args.prompt_tokens / prompt_s, args.output_tokens / gen_s


def ours_run(path: Path, args: argparse.Namespace, threads: int) -> tuple[float, float]:
    """One warm-up and one timed iteration of ``benchmark()``: (pp t/s, tg t/s)."""
    runs = benchmark(
        path,
        prompt_tokens=args.prompt_tokens,
        output_tokens=args.output_tokens,
        iterations=1,
        n_threads=threads,
    ).runs
    unload_model()
    return runs["prompt_tokens_per_sec"][0], runs["generation_tokens_per_sec"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quant", default="Q8_0")
    args = parser.parse_args()
    threads = default_threads()

    with tempfile.TemporaryDirectory() as tmp:
        path = measured_model(Path(tmp), args.quant)
        size_mb = path.stat().st_size / 1e6
        # Interleaved rounds, so that a noisy neighbour slows both sides alike.
        ours, ref = [], []
        for _ in range(args.runs):
            ours.append(ours_run(path, args, threads))
            decoder = ReferenceDecoder(
                path, n_ctx=args.prompt_tokens + args.output_tokens + 1, n_threads=threads
            )
            try:
                ref.append(reference_run(decoder, args))
            finally:
                decoder.close()

    print(
        f"model: {SPEC.n_layers} layers x {SPEC.n_embd}, {args.quant}, {size_mb:.0f} MB; "
        f"{threads} threads; pp{args.prompt_tokens} tg{args.output_tokens}; {args.runs} runs"
    )
    print(f"{'test':<6}{'reference t/s':>20}{'offgrid_nb t/s':>20}{'ratio':>8}")
    for i, test in enumerate((f"pp{args.prompt_tokens}", f"tg{args.output_tokens}")):
        mine, theirs = [r[i] for r in ours], [r[i] for r in ref]
        ref_text = f"{statistics.mean(theirs):.1f} ± {statistics.stdev(theirs):.1f}"
        ours_text = f"{statistics.mean(mine):.1f} ± {statistics.stdev(mine):.1f}"
        ratio = statistics.mean(mine) / statistics.mean(theirs)
        print(f"{test:<6}{ref_text:>20}{ours_text:>20}{ratio:>8.3f}")
    ms_per_token = 1000 / statistics.mean(r[1] for r in ref)
    print(f"one generated token takes {ms_per_token:.1f} ms in the reference loop")


if __name__ == "__main__":
    main()
