"""Chat, replies and benchmarks from several threads at once: they wait, they never crash.

llama.cpp frees a model's memory on close; before engine.use_model, a benchmark in one thread
unloading the model under a chat in another crashed the process. Run in a subprocess so that
a crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, threading
import offgrid_nb as og

path, other = sys.argv[1], sys.argv[2]
errors = []

def guard(fn):
    def run():
        try:
            fn()
        except Exception as exc:
            errors.append(repr(exc))
    return run

def chat():
    og.Chat(path, max_tokens=16).send("hi")

def reply():
    "".join(og.complete(path, [{"role": "user", "content": "hi"}], max_tokens=16))

def bench(model):
    return lambda: og.benchmark(model, prompt_tokens=64, output_tokens=8, iterations=1)

rounds = [(chat, bench(path))] * 20 + [(reply, bench(path)), (chat, bench(other))] * 5
for pair in rounds:  # both start at once: loads, frees and uses overlap
    threads = [threading.Thread(target=guard(f)) for f in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
print("errors:", errors)
"""


def test_chat_reply_and_benchmark_threads_share_the_model_safely(tiny_model, tmp_path):
    other = tmp_path / "other.gguf"
    other.write_bytes(tiny_model.read_bytes())
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny_model), str(other)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "errors: []"
