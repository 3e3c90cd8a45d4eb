"""Does a chat turn cost only its new tokens? And what does Python add per generated token?

1. A 10-turn conversation with ``Chat`` on a generated model: per turn, the prompt tokens
   llama.cpp actually evaluated (its own perf counter) against the conversation's length.
   Target: the sum over turns at most 1.2x the final conversation length.
2. Per generated token, wall time through ``offgrid_nb.chat`` (llama-cpp-python's streaming
   completion, greedy) against a loop on llama.cpp's C API with its greedy sampler
   (``_reference.py``), same model, threads and length. Target: under 10% overhead.

    python benchmarks/chat_turns.py [--turns 10] [--tokens 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _reference import SPEC, ReferenceDecoder, measured_model

from offgrid_nb.chat import Chat, complete
from offgrid_nb.engine import default_threads, load_model, unload_model

MESSAGES = [
    "Hello, who are you?", "What can a local model do offline?", "Tell me about GGUF.",
    "And quantization?", "Which is better, Q4_K_M or Q8_0?", "How much memory for 7B?",
    "Can I run it in Jupyter?", "What is a KV cache?", "Summarise our chat.", "Thanks, bye!",
]  # fmt: skip


def conversation(path: Path, turns: int, tokens: int) -> None:
    chat = Chat(path, max_tokens=tokens, temperature=0.0, n_ctx=4096)
    print(f"{'turn':>4}{'conversation':>14}{'evaluated':>11}{'cached':>8}")
    evaluated = 0
    for turn in range(turns):
        chat.send(MESSAGES[turn % len(MESSAGES)])
        usage = chat.usage
        evaluated += usage.prompt_tokens_evaluated
        cached = usage.prompt_tokens - usage.prompt_tokens_evaluated
        print(
            f"{turn + 1:>4}{usage.prompt_tokens:>14}{usage.prompt_tokens_evaluated:>11}{cached:>8}"
        )
    final = chat.usage.prompt_tokens + chat.usage.completion_tokens
    print(
        f"sum evaluated {evaluated} / final conversation {final} tokens = "
        f"{evaluated / final:.2f}x (target <= 1.2x)"
    )


def ours_per_token(path: Path, tokens: int, threads: int) -> float:
    load_model(path, n_ctx=512, n_threads=threads)
    reply = complete(path, [{"role": "user", "content": "Hi"}], temperature=0.0,
                     max_tokens=tokens, n_ctx=512)  # fmt: skip
    start = time.perf_counter()
    for _ in reply:
        pass
    elapsed = time.perf_counter() - start
    assert reply.usage.completion_tokens == tokens, reply.usage
    llama = load_model(path, n_ctx=512, n_threads=threads).llama
    prompt_s = llama_prompt_seconds(llama)
    return (elapsed - prompt_s) / tokens


def llama_prompt_seconds(llama: object) -> float:
    from offgrid_nb.llama_backend import llama_cpp

    return llama_cpp().llama_perf_context(llama.ctx).t_p_eval_ms / 1000


def reference_per_token(path: Path, tokens: int, threads: int) -> float:
    decoder = ReferenceDecoder(path, n_ctx=512, n_threads=threads)
    try:
        token, _ = decoder.prompt([1, 3, 100, 101, 102, 103, 104, 4])
        return decoder.generate(token, tokens) / tokens
    finally:
        decoder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    threads = default_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = measured_model(Path(tmp))
        print(f"model: {SPEC.n_layers} layers x {SPEC.n_embd}, Q8_0; {threads} threads\n")
        conversation(path, args.turns, args.tokens)
        ours, ref = [], []
        for _ in range(args.rounds):  # interleaved, so noise hits both alike
            ours.append(ours_per_token(path, args.tokens, threads))
            unload_model()
            ref.append(reference_per_token(path, args.tokens, threads))
    ours_ms, ref_ms = statistics.median(ours) * 1000, statistics.median(ref) * 1000
    print(f"\nper generated token (median of {args.rounds} rounds of {args.tokens} tokens):")
    print(f"  llama.cpp C API loop: {ref_ms:.2f} ms")
    print(f"  offgrid_nb.chat:      {ours_ms:.2f} ms")
    print(f"  Python overhead:      {(ours_ms - ref_ms) / ref_ms * 100:+.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
