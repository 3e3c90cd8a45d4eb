"""``BenchmarkPanel``: benchmark local models and compare them on one chart."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as widgets
import pandas as pd

from ..bench import benchmark, plot_comparison
from ..fleet import PER_CHOICES, FleetProgress, existing_client, fleet_benchmark
from .base import Panel, StatusLine, Task
from .choices import including, local_models
from .tables import html_table

if TYPE_CHECKING:
    from distributed import Client

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


def figure_png(runs: pd.DataFrame) -> bytes:
    """:func:`offgrid_nb.bench.plot_comparison` of ``runs`` as PNG bytes (no pyplot, no display)."""
    buffer = io.BytesIO()
    plot_comparison(runs).savefig(buffer, format="png", dpi=96)
    return buffer.getvalue()


class BenchmarkPanel(Panel):
    """Benchmark models of the local library, one after another, and compare them.

    Results appear after each model; Cancel stops after the model being measured (llama.cpp
    cannot be interrupted inside an iteration, and one call per iteration would measure the
    memory baseline with the model already loaded).

    Args:
        models: library names or paths to select (default: none selected).
        prompt_tokens, output_tokens, iterations: as for :func:`offgrid_nb.bench.benchmark`.
        client: a Dask client to offer as a target (default: the current one, if any). Models
            run there as :func:`offgrid_nb.fleet.fleet_benchmark` runs them.

    Attributes:
        models: the model picker (several at once). refresh_button: re-read the models folder.
        target: "This machine" or the Dask cluster (shown with ``per`` when a client exists).
        prompt_tokens, output_tokens, iterations: the settings. run_button, cancel_button.
        progress: models done. table: mean ± sd per model (HTML). plot: the chart (PNG).
        status: notes and errors. runs: one row per model and iteration, as
        :func:`offgrid_nb.bench.compare` returns them (ready for ``save_runs``).
    """

    def __init__(
        self,
        models: Sequence[str | os.PathLike[str]] = (),
        *,
        prompt_tokens: int = 128,
        output_tokens: int = 32,
        iterations: int = 3,
        client: Client | None = None,
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
        self.plot = widgets.Image(format="png", layout={"align_self": "flex-start"})
        self.status = StatusLine()
        self.runs = pd.DataFrame()
        self.refresh(models)
        settings = [self.prompt_tokens, self.output_tokens, self.iterations]
        cluster = [self.target, self.per] if self.client else []
        self.task = Task(
            self.status,
            busy=[self.models, self.refresh_button, *settings, *cluster, self.run_button],
            cancel_button=self.cancel_button,
        )
        self.refresh_button.on_click(lambda _: self.refresh())
        self.run_button.on_click(lambda _: self.run())
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.models, self.refresh_button]),
                widgets.HBox(settings),
                widgets.HBox(cluster),
                widgets.HBox([self.run_button, self.cancel_button, self.progress]),
                self.status,
                self.table,
                self.plot,
            ]
        )
        self.widget.add_class("offgrid-benchmark")

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
        self.task.start(lambda cancel: run(models, settings, cancel), "Starting...")

    def cancel(self) -> None:
        """Stop after the model being measured."""
        self.task.cancel()

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
            self.plot.value = figure_png(runs)
            self.table.value = summary_table(runs)
