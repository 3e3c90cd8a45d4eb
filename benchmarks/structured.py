"""Structured output and tools on the real model (gemma-3-270m, 262k-token vocabulary).

Two comparisons, each interleaved round by round (A, B, A, B...) and reported as medians:

1. generation tokens/s under a JSON schema vs free text (target: constrained >= 0.8x free);
2. first-token latency with a 10-tool list vs no tools (target within 20% of no tools beyond
   the extra prompt tokens: the baseline is a no-tools prompt padded with plain text to the
   same number of tokens).

A ``llama-server`` comparison runs only when such a binary is on PATH (it is skipped, and
said so, otherwise).

Run: ``python benchmarks/structured.py [--rounds 5] [--tokens 96]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from offgrid_nb import bundled_model
from offgrid_nb.chat import complete
from offgrid_nb.engine import unload_model

SCHEMA = {
    "type": "object",
    "properties": {
        "facts": {"type": "array", "items": {"type": "string"}},
        "summary": {"type": "string"},
    },
    "required": ["facts", "summary"],
}
ASK = [{"role": "user", "content": "List facts about Paris, then summarise them."}]
TOOLS = [
    {"type": "function", "function": {"name": f"tool_{i}", "description": f"Tool number {i}",
     "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}
    for i in range(10)
]  # fmt: skip


def _run(
    model: Path, tokens: int, seed: int, padding: str | None = None, **kwargs: object
) -> tuple[float, float, int, int]:
    """``(tokens/s, first-token ms, prompt tokens, completion tokens)`` of one reply; its
    first words differ from every other run's, so no prompt is reused from the KV cache."""
    nonce = f"Run {seed}-{sorted(kwargs)}-{bool(padding)}. {padding or ''}"
    system = [{"role": "system", "content": nonce}]
    reply = complete(model, system + ASK, max_tokens=tokens, seed=seed, temperature=0.8,
                     parallel=1, **kwargs)  # fmt: skip
    for _ in reply:
        pass
    usage = reply.usage
    assert usage is not None
    return (usage.tokens_per_second, usage.time_to_first_token_ms, usage.prompt_tokens,
            usage.completion_tokens)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    model = bundled_model.bundled_model_path()
    if model is None:
        raise SystemExit(f"the real model is not installed ({bundled_model.INSTALL_HINT})")
    template = "gemma"  # the base model's file has none; llama.cpp's gemma template
    runs: dict[str, list[tuple[float, float, int, int]]] = {
        "free": [], "schema": [], "no tools": [], "padded": [], "10 tools": []
    }  # fmt: skip
    _run(model, 8, 0, template=template)  # load and warm up
    extra = (
        _run(model, 1, 0, template=template, tools=TOOLS)[2]
        - _run(model, 1, 0, template=template)[2]
    )
    padding = " ".join(["note"] * extra)
    for seed in range(args.rounds):
        runs["free"].append(_run(model, args.tokens, seed, template=template))
        runs["schema"].append(_run(model, args.tokens, seed, template=template, format=SCHEMA))
        runs["no tools"].append(_run(model, 1, seed, template=template))
        runs["padded"].append(_run(model, 1, seed, template=template, padding=padding))
        runs["10 tools"].append(_run(model, 1, seed, template=template, tools=TOOLS))
    unload_model()

    def median(name: str, field: int) -> float:
        return statistics.median(run[field] for run in runs[name])

    free, schema = median("free", 0), median("schema", 0)
    print(f"rounds: {args.rounds} (interleaved), up to {args.tokens} tokens, medians\n")
    print(f"{'run':<10}{'tokens/s':>10}{'tokens':>8}{'ratio':>8}")
    print(f"{'free':<10}{free:>10.1f}{median('free', 3):>8.0f}{1.0:>8.2f}")
    print(f"{'schema':<10}{schema:>10.1f}{median('schema', 3):>8.0f}{schema / free:>8.2f}"
          "   (target >= 0.80)")  # fmt: skip
    print(f"\n{'run':<22}{'first token ms':>16}{'prompt tokens':>15}{'ratio':>8}")
    padded = median("padded", 1)
    for name, label in (("no tools", "no tools"), ("padded", "no tools, same length"),
                        ("10 tools", "10 tools")):  # fmt: skip
        ms = median(name, 1)
        print(f"{label:<22}{ms:>16.1f}{median(name, 2):>15.0f}{ms / padded:>8.2f}")
    print("10 tools vs the same length without tools: target <= 1.20")
    if shutil.which("llama-server") is None:
        print("\nllama-server: not on PATH, comparison skipped")


if __name__ == "__main__":
    main()
