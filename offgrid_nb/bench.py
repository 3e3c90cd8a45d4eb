"""Benchmarks measured the way ``llama-bench`` measures, returned as DataFrames and plots.

Per iteration, on a cleared KV cache (filled first with ``depth`` untimed tokens, as
``llama-bench -d``):

1. **Prompt processing**: exactly ``prompt_tokens`` tokens (random ids, as llama-bench uses;
   the cost of a token does not depend on which it is) decoded in batches, then the first
   token sampled greedily. The decodes alone give ``prompt_tokens_per_sec``; with the first
   token's sampling they give ``time_to_first_token_ms``.
2. **Generation**: exactly ``output_tokens`` single-token decodes, each token sampled greedily
   from the last logits (end-of-sequence ignored). The decodes alone give
   ``generation_tokens_per_sec``. By default generation follows the prompt, which is what a
   chat feels like and what llama-bench calls ``tg128 @ d512`` (generation at depth 512);
   with ``llama_bench=True`` it starts from the cleared cache (at ``depth``) as llama-bench's
   own ``tg128`` does, and the defaults become llama-bench's: pp512, tg128, 5 repetitions.

Timed as llama-bench times: ``llama_decode`` (and ``llama_synchronize``) on llama.cpp's C API,
nothing of llama-cpp-python's ``Llama.eval`` around it (its batch filling and copy of the
logits). Sampling, which llama-bench leaves out (it picks random tokens), is timed apart:
``sampling_ms_per_token`` is the greedy pick a chat makes (``llama_backend.greedy_token``:
~0.12 ms over 262k tokens), the cost a chat adds to each generated token; ``total_time_ms``
counts both.

Tests are named as llama-bench names them (``pp512``, ``tg128 @ d512``) in every output.
One warm-up iteration runs first and is not counted. Memory is the process's resident set
(psutil) above what it was before the model was loaded.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psutil

from .engine import LoadedModel, default_threads, unload_model, use_model
from .errors import GenerationError, InvalidArgumentError
from .gguf_info import inspect_file
from .jsonfile import write_text
from .library import model_label, resolve_model
from .llama_backend import greedy_token, llama_cpp

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RUN_COLUMNS = [
    "prompt_tokens_per_sec", "generation_tokens_per_sec", "time_to_first_token_ms",
    "total_time_ms", "memory_used_mb", "peak_rss_mb", "sampling_ms_per_token",
]  # fmt: skip
MB = 1024 * 1024


@dataclass(frozen=True)
class BenchmarkConfig:
    """What was measured and how."""

    prompt_tokens: int = 512
    output_tokens: int = 128
    iterations: int = 3
    warmup: bool = True
    n_threads: int | None = None
    n_ctx: int | None = None
    depth: int = 0  # tokens in the KV cache before the timed phases (llama-bench -d)
    generation_after_prompt: bool = True  # False: generation starts at ``depth`` (llama-bench)

    @property
    def prompt_test(self) -> str:
        """llama-bench's name of the prompt phase: ``pp512`` or ``pp512 @ d1024``."""
        return _test_name("pp", self.prompt_tokens, self.depth)

    @property
    def generation_test(self) -> str:
        """llama-bench's name of the generation phase: ``tg128 @ d512`` after a 512 prompt."""
        extra = self.prompt_tokens if self.generation_after_prompt else 0
        return _test_name("tg", self.output_tokens, self.depth + extra)

    @property
    def tokens_needed(self) -> int:
        """The context the runs fill (+1 for the last sampled token)."""
        longest = self.prompt_tokens + (self.output_tokens if self.generation_after_prompt else 0)
        return self.depth + max(longest, self.output_tokens) + 1

    def check(self) -> None:
        """Raise :class:`InvalidArgumentError` for a count below 1 (depth: below 0) or not a
        whole number."""
        for name in ("prompt_tokens", "output_tokens", "iterations", "depth"):
            value, low = getattr(self, name), 0 if name == "depth" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidArgumentError(
                    f"Invalid {name}: {value!r} (must be a whole number >= {low})"
                )
        for name in ("n_threads", "n_ctx"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgumentError(f"Invalid {name}: {value!r} (must be >= 1)")


def _test_name(kind: str, tokens: int, depth: int) -> str:
    return f"{kind}{tokens} @ d{depth}" if depth else f"{kind}{tokens}"


@dataclass
class BenchmarkResult:
    """The runs of one benchmark, with the model, the settings and the machine."""

    model: str
    path: Path
    config: BenchmarkConfig
    runs: pd.DataFrame
    system: dict[str, Any]
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation of every measure (one row per measure)."""
        described = self.runs[RUN_COLUMNS].agg(["mean", "std"]).T
        return described.fillna(0.0)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape OffGrid LLM's ``/v1/benchmark`` returns (plus a few more keys)."""
        mean = self.runs[RUN_COLUMNS].mean()
        std = self.runs[RUN_COLUMNS].std().fillna(0.0)
        return {
            "model": self.model,
            "config": {
                "prompt_tokens": self.config.prompt_tokens,
                "output_tokens": self.config.output_tokens,
                "iterations": self.config.iterations,
                "warmup": self.config.warmup,
                "n_threads": self.system["threads_used"],
                "n_ctx": self.system["n_ctx"],
                "depth": self.config.depth,
                "tests": {
                    "prompt": self.config.prompt_test,
                    "generation": self.config.generation_test,
                },
            },
            "results": {
                "avg_prompt_tokens_per_sec": float(mean["prompt_tokens_per_sec"]),
                "avg_generation_tokens_per_sec": float(mean["generation_tokens_per_sec"]),
                "avg_time_to_first_token_ms": float(mean["time_to_first_token_ms"]),
                "avg_total_time_ms": float(mean["total_time_ms"]),
                "avg_memory_mb": float(mean["memory_used_mb"]),
                "avg_sampling_ms_per_token": float(mean["sampling_ms_per_token"]),
                "std_prompt_tokens_per_sec": float(std["prompt_tokens_per_sec"]),
                "std_generation_tokens_per_sec": float(std["generation_tokens_per_sec"]),
                "peak_rss_mb": float(self.runs["peak_rss_mb"].max()),
                "runs": self.runs[RUN_COLUMNS].to_dict(orient="records"),
            },
            "system": self.system,
            "started_at": self.started_at,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per iteration with the model and machine: what :func:`save_runs` stores."""
        df = self.runs.copy()
        df.insert(0, "model", self.model)
        df.insert(1, "quant", self.system.get("quant"))
        for key in ("prompt_tokens", "output_tokens", "depth"):
            df[key] = getattr(self.config, key)
        df["prompt_test"] = self.config.prompt_test
        df["generation_test"] = self.config.generation_test
        df["threads"] = self.system["threads_used"]
        df["cpu"] = self.system["cpu"]
        df["hostname"] = self.system["hostname"]
        df["started_at"] = self.started_at
        df["backend"] = self.system.get("backend")  # where the layers ran: "CPU", "CUDA+CPU"...
        df["devices"] = ",".join(self.system.get("devices", ()))
        df["gpu_layers"] = self.system.get("n_gpu_layers")
        return df

    def plot(self) -> Figure:
        """Prompt and generation tokens/s with error bars (one standard deviation)."""
        return plot_comparison(self.to_frame())


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def system_info(loaded: LoadedModel | None = None) -> dict[str, Any]:
    """The machine and the llama.cpp build a benchmark ran on."""
    lib = llama_cpp()
    memory = psutil.virtual_memory()
    info: dict[str, Any] = {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_mb": psutil.Process().memory_info().rss / MB,
        "memory_total_mb": memory.total / MB,
        "memory_available_mb": memory.available / MB,
        "cpu": _cpu_name(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "hostname": platform.node(),
        "os": platform.platform(),
        "llama_cpp_python": lib.__version__,
        "llama_cpp_system_info": lib.llama_print_system_info().decode(errors="replace").strip(),
        "gpu_offload": bool(lib.llama_supports_gpu_offload()),
    }
    if loaded is not None:
        info.update(
            threads_used=loaded.n_threads,
            n_ctx=loaded.n_ctx,
            n_gpu_layers=loaded.n_gpu_layers,
            quant=loaded.info.quant,
            backend=loaded.backend,
            devices=list(loaded.devices),
        )
    return info


def _context_for(path: Path, config: BenchmarkConfig) -> int:
    """A context that holds the prompt and the output, or a clear error."""
    needed = config.tokens_needed
    if config.n_ctx is not None:
        if config.n_ctx < needed:
            raise InvalidArgumentError(
                f"depth + prompt_tokens + output_tokens ({needed - 1}) do not fit in "
                f"n_ctx={config.n_ctx}",
                hint=f"raise n_ctx to at least {needed}, or use fewer tokens",
            )
        return config.n_ctx
    limit = inspect_file(path).context_length
    if limit is not None and needed > limit:
        raise InvalidArgumentError(
            f"depth + prompt_tokens + output_tokens ({needed - 1}) exceed {path.name}'s context "
            f"window ({limit})",
            hint="use fewer tokens, or pass n_ctx to go beyond the trained context",
        )
    return needed


class _Runner:
    """One loaded model, timed the llama-bench way."""

    def __init__(self, loaded: LoadedModel, config: BenchmarkConfig, baseline_rss: int) -> None:
        self.loaded = loaded
        self.llama = loaded.llama
        self.config = config
        self.baseline_rss = baseline_rss
        self.process = psutil.Process()
        self.lib = llama_cpp()
        self.rng = np.random.default_rng(0)
        self.n_vocab = self.llama.n_vocab()

    def _sample(self) -> tuple[int, float]:
        """The greedy pick from the last logits, and the seconds it took."""
        start = time.perf_counter()
        token = greedy_token(self.llama.ctx, -1, self.n_vocab)
        return token, time.perf_counter() - start

    def _decode(self, tokens: list[int]) -> float:
        """Decode ``tokens`` after the cache's, ``n_batch`` at a time; the seconds
        ``llama_decode`` took (``Llama`` is told of them, untimed, as its ``eval`` would)."""
        lib, llama, seconds = self.lib, self.llama, 0.0
        for i in range(0, len(tokens), llama.n_batch):
            chunk = tokens[i : i + llama.n_batch]
            array = (ctypes.c_int32 * len(chunk))(*chunk)
            batch = lib.llama_batch_get_one(array, len(chunk))  # positions follow the cache
            start = time.perf_counter()
            status = lib.llama_decode(llama.ctx, batch)
            lib.llama_synchronize(llama.ctx)
            seconds += time.perf_counter() - start
            if status != 0:
                raise GenerationError(f"llama.cpp failed to decode a batch (status {status})")
            llama.input_ids[llama.n_tokens : llama.n_tokens + len(chunk)] = chunk
            llama.n_tokens += len(chunk)
        return seconds

    def _fill(self) -> None:
        """Clear the KV cache, then fill it with ``depth`` untimed tokens."""
        self.llama.reset()
        self.llama._ctx.kv_cache_clear()
        if self.config.depth:
            self.llama.eval(self._random(self.config.depth))

    def _random(self, n: int) -> list[int]:
        return self.rng.integers(0, self.n_vocab, n).tolist()

    def prompt(self) -> _Timed:
        """From a cache of ``depth`` tokens: the prompt, timed, and the first pick."""
        self._fill()
        prompt_s = self._decode(self._random(self.config.prompt_tokens))
        token, first_s = self._sample()
        return _Timed(self.process.memory_info().rss, token, prompt_s, first_s)

    def generation(self, token: int | None = None) -> _Timed:
        """``output_tokens`` generated, each decode and pick timed: after the prompt from its
        pick ``token``, else (``None``) from a cache of ``depth`` tokens, as llama-bench's tg."""
        if token is None:
            self._fill()  # untimed
            token = self._random(1)[0]
        gen_s = sample_s = 0.0
        for _ in range(self.config.output_tokens):
            gen_s += self._decode([token])
            token, seconds = self._sample()
            sample_s += seconds
        return _Timed(self.process.memory_info().rss, token, gen_s, sample_s)

    def run(self) -> dict[str, float]:
        """One iteration: the prompt, then the generation (after it, or from ``depth``)."""
        prompt = self.prompt()
        after = prompt.token if self.config.generation_after_prompt else None
        return _row(self.config, self.baseline_rss, prompt, self.generation(after))


@dataclass(frozen=True)
class _Timed:
    """One timed phase: the resident set after it, the last pick, the seconds of the decodes
    and of the picks."""

    rss: int
    token: int
    decode_s: float
    sample_s: float


def _row(config: BenchmarkConfig, baseline_rss: int, prompt: _Timed, gen: _Timed) -> dict:
    """One iteration's measures (:data:`RUN_COLUMNS`) from its two phases."""
    rss = max(prompt.rss, gen.rss)
    return {
        "prompt_tokens_per_sec": config.prompt_tokens / prompt.decode_s,
        "generation_tokens_per_sec": config.output_tokens / gen.decode_s,
        "time_to_first_token_ms": (prompt.decode_s + prompt.sample_s) * 1000,
        "total_time_ms": (prompt.decode_s + prompt.sample_s + gen.decode_s + gen.sample_s) * 1000,
        "memory_used_mb": (rss - baseline_rss) / MB,
        "peak_rss_mb": _peak_rss(rss) / MB,
        "sampling_ms_per_token": gen.sample_s / config.output_tokens * 1000,
    }


def _peak_rss(current: int) -> int:
    """Peak resident set of this process (``ru_maxrss`` where the OS keeps it)."""
    try:
        import resource

        scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
        return max(current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)
    except ImportError:  # Windows
        return current


def benchmark_config(
    *,
    prompt_tokens: int = 512,
    output_tokens: int = 128,
    iterations: int | None = None,
    warmup: bool = True,
    n_threads: int | None = None,
    n_ctx: int | None = None,
    depth: int = 0,
    llama_bench: bool = False,
) -> BenchmarkConfig:
    """The checked :class:`BenchmarkConfig` of :func:`benchmark`'s options.

    Raises:
        InvalidArgumentError: a count below 1 (depth below 0) or not a whole number.
    """
    if iterations is None:
        iterations = 5 if llama_bench else 3
    config = BenchmarkConfig(
        prompt_tokens, output_tokens, iterations, warmup, n_threads, n_ctx, depth, not llama_bench
    )
    config.check()
    return config


def benchmark(
    model: str | os.PathLike[str],
    *,
    prompt_tokens: int = 512,
    output_tokens: int = 128,
    iterations: int | None = None,
    warmup: bool = True,
    n_threads: int | None = None,
    n_ctx: int | None = None,
    depth: int = 0,
    llama_bench: bool = False,
) -> BenchmarkResult:
    """Benchmark a local model: prompt processing and generation timed apart.

    Args:
        model: a library name or a path (see :func:`offgrid_nb.library.resolve_model`).
        prompt_tokens: tokens evaluated in the prompt phase.
        output_tokens: tokens generated one at a time.
        iterations: counted repetitions (default 3; 5 with ``llama_bench``).
        warmup: run one uncounted iteration first (as llama-bench does).
        n_threads: CPU threads (default: physical cores).
        n_ctx: context to allocate (default: just enough for depth + prompt + output).
        depth: tokens in the KV cache before each timed phase (``llama-bench -d``).
        llama_bench: time generation from the cleared cache (at ``depth``) rather than after
            the prompt, as llama-bench's ``tg`` test does, and (without ``n_ctx``) each phase
            in a context of just its tokens, as llama-bench sizes each test's.

    Returns:
        A :class:`BenchmarkResult` (``.runs``, ``.summary``, ``.to_dict()``, ``.plot()``).

    Raises:
        InvalidArgumentError: zero/negative arguments, or tokens beyond the context.
        OffgridError: as for loading the model (``NotFoundError``, ``AmbiguousError``,
            ``InvalidModelError``, ``InsufficientMemoryError``, ``ModelLoadError``).
    """
    config = benchmark_config(
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        iterations=iterations,
        warmup=warmup,
        n_threads=n_threads,
        n_ctx=n_ctx,
        depth=depth,
        llama_bench=llama_bench,
    )
    found = resolve_model(model)
    path = found.resolve()
    context = _context_for(path, config)
    unload_model()  # the memory baseline must not count a model (ours is reloaded below)
    baseline_rss = psutil.Process().memory_info().rss
    threads = n_threads or default_threads()

    def measured(n_ctx: int, phase: Callable[[_Runner], Any]) -> tuple[list[Any], dict]:
        """``phase`` run (after a warm-up) ``iterations`` times in a context of ``n_ctx``."""
        with use_model(path, n_ctx=n_ctx, n_threads=threads, parallel=1) as loaded:
            runner = _Runner(loaded, config, baseline_rss)
            psutil.cpu_percent(interval=None)  # start the CPU-usage window
            if warmup:
                phase(runner)
            return [phase(runner) for _ in range(config.iterations)], system_info(loaded)

    if config.generation_after_prompt or config.n_ctx is not None:
        rows, system = measured(context, _Runner.run)
    else:  # as llama-bench: each test in a context of its own tokens (attention spans a
        # context's cells up to the next multiple of 256: a bigger one costs tg ~5% at d256)
        prompts, system = measured(config.depth + config.prompt_tokens, _Runner.prompt)
        gens, _ = measured(config.depth + config.output_tokens, _Runner.generation)
        rows = [_row(config, baseline_rss, p, g) for p, g in zip(prompts, gens, strict=True)]
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    runs.index.name = "iteration"
    return BenchmarkResult(model_label(model, found), path, config, runs, system)


def compare(models: list[str | os.PathLike[str]], **options: Any) -> pd.DataFrame:
    """Benchmark several models with the same options; one row per model and iteration.

    Only one model is loaded at a time.
    """
    if not models:
        raise InvalidArgumentError("compare() needs at least one model")
    frames = [benchmark(m, **options).to_frame() for m in models]
    return pd.concat(frames, ignore_index=True)


def save_runs(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Append runs (from :meth:`BenchmarkResult.to_frame` or :func:`compare`) to a CSV file.

    Runs with columns the file lacks (fleet runs add ``host``, ``worker``...) rewrite it, in
    one atomic replace, with every column; runs with fewer columns leave theirs empty.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or not path.stat().st_size:
        df.to_csv(path, index=False)
        return path
    header = list(pd.read_csv(path, nrows=0).columns)
    if set(df.columns) <= set(header):
        df.reindex(columns=header).to_csv(path, mode="a", header=False, index=False)
    else:
        merged = pd.concat([pd.read_csv(path), df], ignore_index=True)
        write_text(path, merged.to_csv(index=False))
    return path


def load_runs(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Runs saved by :func:`save_runs` (from any day or machine), ready for
    :func:`plot_comparison`."""
    return pd.read_csv(path)


def plot_comparison(df: pd.DataFrame) -> Figure:
    """Mean prompt and generation tokens/s per model, with one-standard-deviation error bars.

    Runs from several hosts (a ``host`` column, as :func:`offgrid_nb.fleet.fleet_benchmark`
    gives) are drawn side by side, one bar per host; error rows are left out.
    """
    from matplotlib.figure import Figure

    if "error" in df:
        df = df[df["error"].isna()]
    models = list(dict.fromkeys(df["model"]))
    hosts = list(dict.fromkeys(df["host"])) if "host" in df else []
    series: list[str | None] = hosts if len(hosts) > 1 else [None]
    width = 0.8 / len(series)
    figure = Figure(figsize=(max(6.0, 1.6 * len(models) + 3), 4), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, column, title in (
        (axes[0], "prompt_tokens_per_sec", "Prompt processing"),
        (axes[1], "generation_tokens_per_sec", "Generation"),
    ):
        for number, host in enumerate(series):
            runs = df if host is None else df[df["host"] == host]
            grouped = runs.groupby("model", sort=False)[column]
            mean = grouped.mean().reindex(models)
            std = grouped.std().reindex(models).fillna(0.0)
            offset = (number - (len(series) - 1) / 2) * width
            color = "#4c72b0" if host is None else None
            ax.bar(np.arange(len(models)) + offset, mean, width, yerr=std, capsize=4,
                   color=color, label=host)  # fmt: skip
        ax.set_xticks(np.arange(len(models)), models)
        if len(series) > 1:
            ax.legend(title="host", fontsize="small")
        ax.set_title(title)
        ax.set_ylabel("tokens / s")
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(axis="y", alpha=0.3)
    return figure


__all__ = [
    "BenchmarkConfig",
    "BenchmarkResult",
    "benchmark",
    "compare",
    "load_runs",
    "plot_comparison",
    "save_runs",
    "system_info",
]
