"""Terminal text for core results (the CLI's and the demo's view of the DataFrames)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, TextIO

import pandas as pd

from .sizes import format_size

if TYPE_CHECKING:
    from .bench import BenchmarkResult
    from .download import DownloadProgress


def format_count(n: int | float | None) -> str:
    """``2.5M``, ``12.3K``, ``950``."""
    n = int(n or 0)
    for suffix, factor in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return str(n)


def search_blocks(df: pd.DataFrame) -> str:
    """One block per repo: counts, recommended variant, the variants, the download command."""
    if df.empty:
        return "No models found. Try another query, fewer filters, or --all to include gated repos."
    blocks = []
    for i, row in enumerate(df.itertuples(index=False), start=1):
        recommended = (
            f"{row.best_quant or row.best_file} ({format_size(row.best_size)})"
            if row.best_file
            else "none"
        )
        offload = getattr(row, "offload", None)
        if row.best_file and isinstance(offload, str):
            recommended += f" on {offload}" + (
                f" ({row.gpu_layers} layers offloaded)" if offload == "partial" else ""
            )
        available = ", ".join(
            f"{v['quant'] or v['filename']} ({format_size(v['size']).replace(' ', '')})"
            for v in row.variants
        )
        lines = [
            f"{i}. {row.id}" + ("  [gated]" if row.gated else ""),
            f"   ↓ {format_count(row.downloads)} downloads  ❤ {row.likes} likes  │  "
            f"Recommended: {recommended}",
            f"   Available: {available or 'no GGUF files'}",
        ]
        if row.download_command:
            lines.append(f"   Download: {row.download_command}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def to_json(df: pd.DataFrame, **attrs: Any) -> str:
    """Rows as JSON records (timestamps in ISO 8601), wrapped with ``attrs``."""
    records = json.loads(df.to_json(orient="records", date_format="iso"))
    return json.dumps({**attrs, "results": records}, indent=2, ensure_ascii=False)


def format_duration(seconds: float | None) -> str:
    """``2m 31s``, ``1h 05m``, ``8s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def progress_line(event: DownloadProgress) -> str:
    """``Progress: 47.2% (1.8 / 3.8 GB) · 12.3 MB/s · ETA 2m 31s``."""
    total = event.total or 0
    unit, factor = ("GB", 1e9) if total >= 1e9 else ("MB", 1e6)
    percent = f"{event.fraction * 100:.1f}%" if event.fraction is not None else "?%"
    line = (
        f"Progress: {percent} ({event.bytes_done / factor:.1f} / {total / factor:.1f} {unit})"
        f" · {format_size(event.speed)}/s"
    )
    if event.status == "downloading":
        line += f" · ETA {format_duration(event.eta)}"
        if event.connections > 1:
            line += f" · {event.connections} connections"
    if event.n_files > 1:
        line += f" · file {event.file_index}/{event.n_files}"
    return line


class ProgressPrinter:
    """A download progress callback for a terminal: one line redrawn in place on a TTY,
    a line every ``every`` seconds (and at the end) when the output is a file or a pipe."""

    def __init__(self, stream: TextIO, *, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self._last = 0.0
        self._width = 0

    def __call__(self, event: DownloadProgress) -> None:
        if event.status == "starting":
            return
        line = progress_line(event)
        final = event.status == "done"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width) + ("\n" if final else ""))
            self._width = len(line)
        elif final or time.monotonic() - self._last >= self.every:
            self.stream.write(line + "\n")
            self._last = time.monotonic()
        self.stream.flush()


def models_table(df: pd.DataFrame) -> str:
    """The local library as an aligned table (name, source, quant, size, repo, downloaded)."""
    if df.empty:
        return "No local models yet: `offgrid search` finds one, `offgrid download-hf` gets it."
    rows = [("NAME", "SOURCE", "QUANT", "SIZE", "REPO", "DOWNLOADED")]
    for row in df.itertuples(index=False):
        when = str(row.downloaded_at)[:16].replace("T", " ") if row.downloaded_at else "-"
        size, repo = format_size(row.size), row.repo_id or "-"
        rows.append((row.name, row.source, row.quant or "?", size, repo, when))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def benchmark_table(result: BenchmarkResult) -> str:
    """A llama-bench-style markdown table: model, quant, threads, test, tokens/s (mean ± sd)."""
    s = result.summary
    head = "| model | quant | threads | test | t/s |\n| --- | --- | ---: | --- | ---: |"
    lines = [head]
    for test, column in (
        (result.config.prompt_test, "prompt_tokens_per_sec"),
        (result.config.generation_test, "generation_tokens_per_sec"),
    ):
        mean, std = s.loc[column, "mean"], s.loc[column, "std"]
        lines.append(
            f"| {result.model} | {result.system.get('quant') or '?'} | "
            f"{result.system['threads_used']} | {test} | {mean:.2f} ± {std:.2f} |"
        )
    ttft = s.loc["time_to_first_token_ms"]
    lines.append(f"\ntime to first token: {ttft['mean']:.1f} ± {ttft['std']:.1f} ms")
    sampling = s.loc["sampling_ms_per_token", "mean"]
    lines.append(f"sampling: {sampling:.2f} ms per generated token (not in t/s)")
    lines.append(f"memory used: {s.loc['memory_used_mb', 'mean']:.0f} MB")
    return "\n".join(lines)


def _figure(value: Any) -> str:
    return "-" if pd.isna(value) else f"{value:.2f}"


def fleet_table(df: pd.DataFrame) -> str:
    """Fleet runs as a markdown table: one line per run (means over its iterations)."""
    lines = [
        "| model | host | worker | download s | pp t/s | tg t/s | error |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    runs = df.groupby(["model", "worker", "task_start"], sort=False, dropna=False)
    for (model, worker, _), rows in runs:
        first = rows.iloc[0]
        error = "" if pd.isna(first["error"]) else str(first["error"]).replace("|", "\\|")
        lines.append(
            f"| {model} | {first['host'] if pd.notna(first['host']) else '-'} | "
            f"{worker if pd.notna(worker) else '-'} | {_figure(first['download_s'])} | "
            f"{_figure(rows['prompt_tokens_per_sec'].mean())} | "
            f"{_figure(rows['generation_tokens_per_sec'].mean())} | {error} |"
        )
    return "\n".join(lines)
