"""Two replies in non-adjacent slots against two in adjacent ones, in tokens/s (in-process, the
real model, ``parallel=4``, a KV stream per slot).

With a stream per slot, llama.cpp decodes a batch in one pass over the weights only when its
sequence ids are consecutive: replies in slots 0 and 3 (slots 1 and 2 free) would take two
passes a step. Each round loads the model afresh (so the four replies of a layout take slots 0-3
in order), starts four replies at once, two of them one token long, and times the two long ones
from their third token to their last. ``--tree DIR`` adds the same measurement of another
checkout (``git worktree add DIR REV``), in its own process, the rounds interleaved.

    python benchmarks/slot_gaps.py [--tokens 96] [--rounds 5] [--tree DIR]

Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

LAYOUTS = {"slots 0 and 1 (adjacent)": (1, 1, 0, 0), "slots 0 and 3 (a gap)": (1, 0, 0, 1)}

WORKLOAD = """
import json, sys, threading, time
import offgrid_nb as og
from offgrid_nb.batching import scheduler
from offgrid_nb.bundled_model import bundled_model_path
from offgrid_nb.engine import unload_model, use_model

model, tokens, load = bundled_model_path(), int(sys.argv[1]), {"parallel": 4, "n_threads": 2}
prompts = ["The capital of France is", "Once upon a time,", "def fibonacci(n):", "Water boils at"]
out = {}
for name, longs in json.loads(sys.argv[2]).items():
    replies = [
        og.generate(model, p, stream=True, temperature=0, max_tokens=tokens if long else 1, **load)
        for p, long in zip(prompts, longs)
    ]
    stamps = [[] for _ in replies]
    def drain(i):
        for _ in replies[i]:
            stamps[i].append(time.perf_counter())
    threads = [threading.Thread(target=drain, args=(i,)) for i in range(4)]
    with use_model(model, **load) as loaded:  # every reply queued before the first step
        for thread in threads:
            thread.start()
        while scheduler(loaded).status()["queued"] < 4:
            time.sleep(0.001)
    for thread in threads:
        thread.join()
    long = [s for s, is_long in zip(stamps, longs) if is_long]
    start, end = max(s[2] for s in long), max(s[-1] for s in long)
    done = sum(len([t for t in s if t > start]) for s in long)
    out[name] = done / (end - start)
    unload_model()
print(json.dumps(out))
"""


def measure(tree: Path, tokens: int) -> dict[str, float]:
    """One round in a fresh process running ``tree``'s offgrid_nb: tokens/s per layout."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-c", WORKLOAD, str(tokens), json.dumps(LAYOUTS)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="another checkout, measured alike")
    args = parser.parse_args()
    trees = {"this tree": Path(__file__).resolve().parent.parent}
    if args.tree:
        trees[f"{args.tree}"] = args.tree.resolve()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):  # interleaved, so a busy moment hurts both alike
        for name, tree in trees.items():
            runs[name].append(measure(tree, args.tokens))
    print(f"{args.rounds} rounds, medians; tokens/s of the two long replies together")
    print(f"{'tree':<24}{'layout':<28}{'tok/s':>8}{'vs adjacent':>13}")
    for name, rounds in runs.items():
        medians = {layout: statistics.median(r[layout] for r in rounds) for layout in LAYOUTS}
        adjacent = medians[next(iter(LAYOUTS))]
        for layout, speed in medians.items():
            print(f"{name:<24}{layout:<28}{speed:>8.1f}{speed / adjacent:>12.2f}x")


if __name__ == "__main__":
    main()
