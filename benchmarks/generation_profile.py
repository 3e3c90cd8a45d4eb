"""Where a reply's time goes: py-spy samples of the scheduler thread while the real model
(gemma-3-270m Q4_K_M, the registry package) generates, grouped by what each sample was in.

Groups: ``llama_decode`` (the graph: what llama-bench times), ``sampling`` (llama.cpp's C
sampler chain), ``python`` (everything else in the slot thread: text pieces, stop strings,
queues). Needs ``py-spy`` (``pip install py-spy``; it samples a child process, no root needed).

Run from the repository root: ``python benchmarks/generation_profile.py [--tokens 200]``.
Not a test.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

WORKLOAD = """
import offgrid_nb as og
from offgrid_nb.bundled_model import bundled_model_path
model = bundled_model_path()
og.generate(model, "Once upon a time", max_tokens=8, temperature=0)  # loaded, warm
for _ in range({rounds}):
    og.generate(model, "Once upon a time", max_tokens={tokens}, temperature=0)
"""


def group(stack: str) -> str | None:
    """The group of one sample of the slot thread (None: another thread)."""
    if "Scheduler._" not in stack:
        return None
    leaf = stack.split(";")[-1]
    if "Scheduler._step" in leaf and "batching.py" in leaf:
        return "decode or sample"  # a C call made from _step: told apart by its line below
    return "python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("error: py-spy is not installed (pip install py-spy)")
    source = Path(__file__).resolve().parent.parent / "offgrid_nb" / "batching.py"
    lines = source.read_text().splitlines()
    step_decode = "llama_decode(self.loaded.llama.ctx, batch)"  # the call in Scheduler._step
    decode_line = next(i for i, text in enumerate(lines, 1) if step_decode in text)
    with tempfile.TemporaryDirectory() as tmp:
        workload, raw = Path(tmp) / "workload.py", Path(tmp) / "samples.txt"
        workload.write_text(WORKLOAD.format(rounds=args.rounds, tokens=args.tokens))
        command = [spy, "record", "-r", "200", "-f", "raw", "-o", str(raw), "--threads", "--"]
        subprocess.run([*command, sys.executable, str(workload)], check=True,
                       capture_output=True)  # fmt: skip
        counts: Counter[str] = Counter()
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            kind = group(stack)
            if kind == "decode or sample":
                kind = "llama_decode" if f"batching.py:{decode_line})" in stack else "sampling"
            if kind is not None:
                counts[kind] += int(n)
    total = sum(counts.values())
    print(f"{'where':14}  {'samples':>7}  {'share':>6}")
    for kind in ("llama_decode", "sampling", "python"):
        print(f"{kind:14}  {counts[kind]:7}  {counts[kind] / total:6.1%}")


if __name__ == "__main__":
    main()
