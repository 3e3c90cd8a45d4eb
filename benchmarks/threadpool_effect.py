"""What does a threadpool of our own (``offgrid_nb.threadpool``) change, and at which poll level?

``benchmark(..., llama_bench=True)`` on the real model (gemma-3-270m Q4_K_M, from the demo
extra; else skipped) and on the generated model of ``_reference.py``, in rounds that alternate
between variants: no pool (ggml's throwaway pool per graph, as llama-cpp-python leaves it) and
a pool at each poll level asked for. Medians of pp and tg tokens/s (decode only) per variant,
and their ratio to "no pool".

    python benchmarks/threadpool_effect.py [--rounds 7] [--polls 0,50,100]
        [--prompt-tokens 512] [--output-tokens 128] [--depth 0] [--model real|generated|both]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _reference import measured_model

from offgrid_nb import bundled_model, threadpool
from offgrid_nb.bench import benchmark
from offgrid_nb.config import settings_override
from offgrid_nb.engine import default_threads, unload_model

_attach = threadpool.attach


def one_round(path: Path, args: argparse.Namespace, poll: int | None) -> tuple[float, float]:
    """[pp t/s, tg t/s] of one warm-up and one timed iteration; ``poll`` None: no pool."""
    threadpool.attach = _attach if poll is not None else lambda llama, n_threads: None
    try:
        with settings_override(poll=poll):
            result = benchmark(
                path,
                prompt_tokens=args.prompt_tokens,
                output_tokens=args.output_tokens,
                iterations=1,
                depth=args.depth,
                llama_bench=True,
            )
    finally:
        unload_model()
        threadpool.attach = _attach
    runs: Any = result.runs
    return runs["prompt_tokens_per_sec"][0], runs["generation_tokens_per_sec"][0]


def measure(path: Path, label: str, args: argparse.Namespace) -> None:
    variants: list[int | None] = [None, *(int(p) for p in args.polls.split(","))]
    figures: dict[int | None, list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(args.rounds):  # interleaved: a noisy neighbour slows every variant alike
        for poll in variants:
            figures[poll].append(one_round(path, args, poll))
    depth = f" @ d{args.depth}" if args.depth else ""
    print(f"\n{label}; {default_threads()} threads; {args.rounds} rounds, medians")
    print(f"{'variant':<12}{'pp t/s':>10}{'tg t/s':>10}{'pp ratio':>10}{'tg ratio':>10}")
    base = [statistics.median(r[i] for r in figures[None]) for i in (0, 1)]
    for poll, rows in figures.items():
        pp, tg = (statistics.median(r[i] for r in rows) for i in (0, 1))
        name = "no pool" if poll is None else f"poll {poll}"
        print(f"{name:<12}{pp:>10.1f}{tg:>10.2f}{pp / base[0]:>10.3f}{tg / base[1]:>10.3f}")
    print(f"(pp{args.prompt_tokens}{depth}, tg{args.output_tokens}{depth})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--polls", default="0,50,100")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--depth", type=int, default=0)
    parser.add_argument("--model", choices=["real", "generated", "both"], default="both")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model in ("real", "both"):
            path = bundled_model.bundled_model_path()
            if path is None:
                print(f"real model skipped: {bundled_model.INSTALL_HINT}")
            else:
                measure(path, "gemma-3-270m Q4_K_M (real)", args)
        if args.model in ("generated", "both"):
            measure(measured_model(Path(tmp), "Q8_0"), "generated 8x1024 Q8_0", args)


if __name__ == "__main__":
    main()
