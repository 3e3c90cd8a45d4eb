"""``BenchmarkPanel``: benchmark local models and compare them on one chart; measure what each
quantization of a model loses (perplexity, KL-divergence) beside its speed."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..bench import benchmark, plot_comparison
from ..corpus import DATASETS
from ..errors import DownloadCancelledError, RunCancelledError
from ..fleet import PER_CHOICES, FleetProgress, existing_client, fleet_benchmark
from ..perplexity import ChunkProgress
from ..quality import pareto_front, plot_quality, quality, repo_variants
from .base import Panel, StatusLine, Task
from .choices import including, local_models
from .tables import html_table

if TYPE_CHECKING:
    from distributed import Client
    from matplotlib.figure import Figure

WIDE = {"description_width": "initial"}


def summary_table(runs: pd.DataFrame) -> str:
    """Mean ± standard deviation per model of runs as :meth:`BenchmarkResult.to_frame` has them
    (per model and host for runs from several hosts; error rows left out)."""
    if "error" in runs:
        runs = runs[runs["error"].isna()]
    by_host = "host" in runs and runs["host"].nunique() > 1
    grouped = runs.groupby(["model", "host"] if by_host else "model", sort=False)
    mean, std = grouped.mean(numeric_only=True), grouped.std(numeric_only=True).fillna(0.0)

    def spread(column: str, digits: int) -> list[str]:
        pairs = zip(mean[column], std[column], strict=True)
        return [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in pairs]

    models = mean.index.get_level_values("model") if by_host else mean.index
    rows = pd.DataFrame(
        {
            "Model": models,
            **({"Host": mean.index.get_level_values("host")} if by_host else {}),
            "Quant": grouped["quant"].first().fillna("?").to_numpy(),
            "Prompt tokens/s": spread("prompt_tokens_per_sec", 1),
            "Generation tokens/s": spread("generation_tokens_per_sec", 1),
            "First token (ms)": spread("time_to_first_token_ms", 0),
            "Memory (MB)": [f"{m:.0f}" for m in mean["memory_used_mb"]],
            "Runs": grouped.size().to_numpy(),
        }
    )
    return html_table(rows, caption="Benchmark (mean ± standard deviation)")


def png(figure: Figure) -> bytes:
    """A matplotlib figure as PNG bytes (no pyplot, no display)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)
    return buffer.getvalue()


def chart_image() -> widgets.Image:
    """An image for a PNG chart, hidden until it has one (an empty image shows as broken)."""
    return widgets.Image(format="png", layout={"align_self": "flex-start", "display": "none"})


def show_png(image: widgets.Image, data: bytes) -> None:
    """Show ``data`` in ``image`` (see :func:`chart_image`)."""
    image.value = data
    image.layout.display = ""


def figure_png(runs: pd.DataFrame) -> bytes:
    """:func:`offgrid_nb.bench.plot_comparison` of ``runs`` as PNG bytes."""
    return png(plot_comparison(runs))


def _speed_measured(df: pd.DataFrame) -> bool:
    column = "generation_tokens_per_sec"
    return column in df and bool(df[column].notna().any())


def quality_table(df: pd.DataFrame) -> str:
    """A :func:`offgrid_nb.quality.quality` table for reading: figures with their ± and a ★ on
    the Pareto front (KLD against generation tokens/s when measured, else file size)."""

    def pm(column: str, digits: int, error: str | None = None) -> list[str]:
        pairs = zip(df[column], df[error or f"{column}_err"], strict=True)
        return [f"{v:.{digits}f} ± {e:.{digits}f}" for v, e in pairs]

    speed = _speed_measured(df)
    if speed:
        front = pareto_front(df, "generation_tokens_per_sec", larger_x_better=True)
    else:
        front = pareto_front(df, "file_size_mb", larger_x_better=False)
    best = f"★ Pareto front ({'speed' if speed else 'size'})"
    rows = pd.DataFrame(
        {
            "Quant": df["quant"].fillna("?").to_numpy(),
            "Model": df["model"].to_numpy(),
            "Size (MB)": [f"{v:.1f}" for v in df["file_size_mb"]],
            "Bits/weight": [f"{v:.2f}" for v in df["bits_per_weight"]],
            "PPL": pm("ppl", 3),
            "ln(PPL/PPL ref)": pm("ln_ppl_ratio", 4),
            "KLD": pm("kld", 4),
            "KLD p99": [f"{v:.4f}" for v in df["kld_p99"]],
            "Same top (%)": pm("same_top_pct", 1, "same_top_err"),
        }
    )
    if speed:
        rows["Generation tokens/s"] = [f"{v:.1f}" for v in df["generation_tokens_per_sec"]]
        rows["Memory (MB)"] = [f"{v:.0f}" for v in df["memory_used_mb"]]
    rows["Note"] = [
        ", ".join(n for n, on in (("reference", ref), (best, top)) if on)
        for ref, top in zip(df["reference"], front, strict=True)
    ]
    return html_table(rows, caption=f"Quality against {df['model'].iloc[0]} (the reference)")


class BenchmarkPanel(Panel):
    """Benchmark models of the local library, one after another, and compare them.

    Results appear after each model; Cancel stops after the model being measured (llama.cpp
    cannot be interrupted inside an iteration, and one call per iteration would measure the
    memory baseline with the model already loaded).

    Quality measures the selected models (variants of one model), or a Hub repo's variants when
    ``repo`` is filled in, as :func:`offgrid_nb.quality.quality` does: perplexity and
    KL-divergence against a reference, with speed and memory (measured with the benchmark's
    settings), in a table and a Pareto chart. Cancel stops it at the next decode.

    Args:
        models: library names or paths to select (default: none selected).
        prompt_tokens, output_tokens, iterations: as for :func:`offgrid_nb.bench.benchmark`.
        client: a Dask client to offer as a target (default: the current one, if any). Models
            run there as :func:`offgrid_nb.fleet.fleet_benchmark` runs them.
        repo, reference, quants, text, n_ctx, chunks, speed: the quality run's settings, as for
            :func:`offgrid_nb.quality.quality` (``text``: a text file, or a known dataset's
            name such as ``"wikitext-2"``; ``chunks=0``: all).

    Attributes:
        models: the model picker (several at once). refresh_button: re-read the models folder.
        target: "This machine" or the Dask cluster (shown with ``per`` when a client exists).
        prompt_tokens, output_tokens, iterations: the settings. run_button, cancel_button.
        progress: models (or, for quality, chunks) done. table: mean ± sd per model (HTML).
        plot: the chart (PNG). status: notes and errors. runs: one row per model and
        iteration, as :func:`offgrid_nb.bench.compare` returns them (ready for ``save_runs``).
        repo, reference, quants, text, n_ctx, chunks, speed: the quality settings;
        quality_button. quality_table: the quality table (HTML). quality_plot: KLD against
        tokens/s and size, the Pareto front marked (PNG). quality_results: the
        :func:`~offgrid_nb.quality.quality` DataFrame.
    """

    def __init__(
        self,
        models: Sequence[str | os.PathLike[str]] = (),
        *,
        prompt_tokens: int = 128,
        output_tokens: int = 32,
        iterations: int = 3,
        client: Client | None = None,
        repo: str = "",
        reference: str = "",
        quants: str = "",
        text: str | os.PathLike[str] = "",
        n_ctx: int = 512,
        chunks: int = 0,
        speed: bool = True,
    ) -> None:
        self.client = client or existing_client()
        targets = [("This machine", "local")]
        if self.client is not None:
            targets.append((f"Dask cluster {self.client.scheduler.address}", "cluster"))
        self.target = widgets.Dropdown(options=targets, description="Run on")
        self.per = widgets.Dropdown(options=PER_CHOICES, value="spread", description="Per")
        self.models = widgets.SelectMultiple(description="Models", rows=5, layout={"width": "60%"})
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.prompt_tokens = widgets.BoundedIntText(
            value=prompt_tokens, min=1, max=65536, description="Prompt tokens", style=WIDE
        )
        self.output_tokens = widgets.BoundedIntText(
            value=output_tokens, min=1, max=65536, description="Output tokens", style=WIDE
        )
        self.iterations = widgets.BoundedIntText(
            value=iterations, min=1, max=100, description="Iterations", style=WIDE
        )
        self.run_button = widgets.Button(description="Run", icon="play", button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="Models")
        self.table = widgets.HTML()
        self.plot = chart_image()
        self.status = StatusLine()
        self.runs = pd.DataFrame()
        self._quality_widgets(repo, reference, quants, text, n_ctx, chunks, speed)
        self.refresh(models)
        settings = [self.prompt_tokens, self.output_tokens, self.iterations]
        cluster = [self.target, self.per] if self.client else []
        quality_settings = [
            [self.repo, self.reference, self.quants],
            [self.text, self.n_ctx, self.chunks, self.speed],
        ]
        buttons = [self.run_button, self.quality_button]
        self.task = Task(
            self.status,
            busy=[
                self.models,
                self.refresh_button,
                *settings,
                *cluster,
                *buttons,
                *(w for row in quality_settings for w in row),
            ],
            cancel_button=self.cancel_button,
        )
        self.refresh_button.on_click(lambda _: self.refresh())
        self.run_button.on_click(lambda _: self.run())
        self.quality_button.on_click(lambda _: self.measure_quality())
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.models, self.refresh_button]),
                widgets.HBox(settings),
                widgets.HBox(cluster),
                widgets.HTML(
                    "<b>Quality</b>: the selected variants of one model (or a repo's), "
                    "against the reference: perplexity, KL-divergence, speed"
                ),
                *(widgets.HBox(row) for row in quality_settings),
                widgets.HBox([*buttons, self.cancel_button, self.progress]),
                self.status,
                self.table,
                self.plot,
                self.quality_table,
                self.quality_plot,
            ]
        )
        self.widget.add_class("offgrid-benchmark")

    def _quality_widgets(
        self,
        repo: str,
        reference: str,
        quants: str,
        text: str | os.PathLike[str],
        n_ctx: int,
        chunks: int,
        speed: bool,
    ) -> None:
        self.repo = widgets.Text(
            value=repo, description="or repo", placeholder="owner/name-GGUF", style=WIDE
        )
        self.reference = widgets.Text(
            value=reference, description="Reference", placeholder="the largest file", style=WIDE
        )
        self.quants = widgets.Text(
            value=quants, description="Quants", placeholder="all, or e.g. Q4_K_M,Q8_0", style=WIDE
        )
        self.text = widgets.Combobox(
            value=str(text),
            options=sorted(DATASETS),
            description="Text",
            style=WIDE,
            placeholder="sample; a file, wikitext-2",
            ensure_option=False,
        )
        self.n_ctx = widgets.BoundedIntText(
            value=n_ctx, min=16, max=131072, description="Context", style=WIDE
        )
        self.chunks = widgets.BoundedIntText(
            value=chunks, min=0, max=100_000, description="Chunks (0: all)", style=WIDE
        )
        self.speed = widgets.Checkbox(value=speed, description="Speed too", indent=False)
        self.quality_button = widgets.Button(
            description="Quality",
            icon="balance-scale",
            tooltip="Perplexity and KL-divergence of each variant against the reference",
        )
        self.quality_table = widgets.HTML()
        self.quality_plot = chart_image()
        self.quality_results = pd.DataFrame()

    def refresh(self, models: Sequence[str | os.PathLike[str]] = ()) -> None:
        """Re-read the models folder into the picker, keeping the selection (plus ``models``)."""
        options, chosen = local_models(), [*self.models.value]
        for model in models:
            options, value = including(options, model)
            chosen.append(value)
        self.models.options = options
        values = {value for _, value in options}
        self.models.value = tuple(dict.fromkeys(v for v in chosen if v in values))

    def run(self) -> None:
        """Benchmark the selected models in the background (what the Run button does)."""
        models = list(self.models.value)
        if not models:
            self.status.show_error("Select at least one model")
            return
        settings = {
            "prompt_tokens": self.prompt_tokens.value,
            "output_tokens": self.output_tokens.value,
            "iterations": self.iterations.value,
        }
        run = self._run_on_cluster if self.target.value == "cluster" else self._run
        self.progress.description = "Models"
        self.task.start(lambda cancel: run(models, settings, cancel), "Starting...")

    def measure_quality(self) -> None:
        """Measure the quality of the selected models, or of the repo's variants, in the
        background (what the Quality button does)."""
        repo, models = self.repo.value.strip(), list(self.models.value)
        if not repo and not models:
            self.status.show_error("Select the variants of one model, or give a Hub repo")
            return
        source = self.text.value.strip()
        if source in DATASETS:
            where: dict[str, Any] = {"dataset": source}
        else:
            where = {"text": Path(source).expanduser()} if source else {}
        quants = [q.strip() for q in self.quants.value.split(",") if q.strip()]
        options = {
            **where,
            "reference": self.reference.value.strip() or None,
            "quants": quants or None,
            "n_ctx": self.n_ctx.value,
            "chunks": self.chunks.value or None,
            "speed": self.speed.value,
            "speed_options": {
                "prompt_tokens": self.prompt_tokens.value,
                "output_tokens": self.output_tokens.value,
                "iterations": self.iterations.value,
            },
        }
        note = f"Listing and downloading the variants of {repo}..." if repo else "Starting..."
        self.progress.description = "Chunks"
        self.task.start(lambda cancel: self._measure(repo or models, options, cancel), note)

    def cancel(self) -> None:
        """Stop after the model being measured (a quality run: at the next decode)."""
        self.task.cancel()

    def _measure(
        self, models: str | list[str], options: dict[str, Any], cancel: threading.Event
    ) -> None:
        if isinstance(models, str):
            expected = len(repo_variants(models, options["quants"]))
        else:
            expected = len(models)
        seen: list[str] = []
        self.progress.value = 0

        def show(event: ChunkProgress) -> None:
            if event.model not in seen:
                seen.append(event.model)
            number, count = seen.index(event.model), max(expected, len(seen))
            with self.progress.hold_sync():
                self.progress.max = count * event.total
                self.progress.value = number * event.total + event.done
            then = ", then its speed" if options["speed"] and event.done == event.total else ""
            self.status.show(
                f"Model {number + 1} of {count}: {event.model}, chunk {event.done} of "
                f"{event.total} (PPL {event.ppl:.2f}){then}..."
            )

        try:
            df = quality(models, progress=show, cancel=cancel, **options)
        except (RunCancelledError, DownloadCancelledError):
            self.status.show("Quality run cancelled.")
            return
        self.quality_results = df
        with self.quality_table.hold_sync(), self.quality_plot.hold_sync():
            self.quality_table.value = quality_table(df)
            show_png(self.quality_plot, png(plot_quality(df)))
        self.progress.value = self.progress.max
        variants = f"{len(df)} variant{'' if len(df) == 1 else 's'}"
        self.status.show(f"Done: {variants} against {df['model'].iloc[0]}.")

    def _run(self, models: list[str], settings: dict[str, int], cancel: threading.Event) -> None:
        with self.progress.hold_sync():
            self.progress.max, self.progress.value = len(models), 0
        frames: list[pd.DataFrame] = []
        for number, model in enumerate(models, start=1):
            if cancel.is_set():
                self.status.show(f"Cancelled after {len(frames)} of {len(models)} models.")
                return
            name = Path(model).name
            self.status.show(f"Benchmarking model {number} of {len(models)}: {name}...")
            frames.append(benchmark(model, **settings).to_frame())
            self._show(pd.concat(frames, ignore_index=True))
            self.progress.value = number
        runs = f"{settings['iterations']} iterations each"
        self.status.show(
            f"Done: {len(models)} {'model' if len(models) == 1 else 'models'}, {runs}."
        )

    def _run_on_cluster(
        self, models: list[str], settings: dict[str, int], cancel: threading.Event
    ) -> None:
        frames: list[pd.DataFrame] = []

        def show(event: FleetProgress) -> None:
            frames.append(event.rows)
            self._show(pd.concat(frames, ignore_index=True))
            with self.progress.hold_sync():
                self.progress.max, self.progress.value = event.total, event.done
            self.status.show(f"{event.done} of {event.total} runs done on the cluster...")

        runs = fleet_benchmark(
            models, self.client, per=self.per.value, progress=show, cancel=cancel, **settings
        )
        self._show(runs)
        failed = runs.drop_duplicates(["model", "worker", "task_start"]).dropna(subset="error")
        if failed.empty:
            self.status.show(f"Done: {runs['task_start'].nunique()} runs on the cluster.")
        else:
            first = failed.iloc[0]
            self.status.show_error(f"{len(failed)} runs failed; {first['model']}: {first['error']}")

    def _show(self, runs: pd.DataFrame) -> None:
        """Keep ``runs`` and draw their table and chart (runs with figures only)."""
        self.runs = runs
        if "error" not in runs or runs["error"].isna().any():
            show_png(self.plot, figure_png(runs))
            self.table.value = summary_table(runs)
