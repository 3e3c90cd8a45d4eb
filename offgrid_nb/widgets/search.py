"""``SearchPanel``: search the Hub, read a repo's variants (and whether they fit), download one."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import pandas as pd

from ..fit import FITS, GB, GPU, PARTIAL, PARTIAL_NOTE, TIGHT, TOO_LARGE, recommend
from ..hub import MAX_LIMIT, search
from ..render import format_count
from ..sizes import format_size
from .base import Panel, StatusLine, Task
from .download import DownloadPanel
from .tables import html_table

SORTS = ("downloads", "likes", "relevance", "trending", "created", "modified")
QUANTS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0", "Q3_K_M", "Q2_K", "IQ4_XS", "F16")
FIT_TEXT = {FITS: "✓ fits", TIGHT: "~ tight", TOO_LARGE: "✗ too large"}
VARIANT_HEADER = ("File", "Quant", "Size", "On this machine", "")
WIDE = {"description_width": "initial"}


def results_table(df: pd.DataFrame) -> str:
    """Search results as an HTML table: downloads, likes, recommended variant, quantizations."""
    if df.empty:
        return "<p>No GGUF models match. Try another query or fewer filters.</p>"
    rows = pd.DataFrame(
        {
            "#": range(1, len(df) + 1),
            "Model": df["id"].where(~df["gated"].astype(bool), df["id"] + " (gated)"),
            "Downloads": df["downloads"].map(format_count),
            "Likes": df["likes"],
            "Recommended": df["best_quant"].fillna(df["best_file"]).fillna("-"),
            "Size": df["best_size"].map(format_size),
            "Quantizations": df["quants"].map(", ".join),
        }
    )
    return html_table(rows, caption=f"{len(df)} models on the Hub")


def _fit_text(fits: str | None, total_gb: float | None, offload: Any = None) -> str:
    """The verdict, its size, and where the layers go when a GPU takes some
    (``offload``: an object with ``offload``, ``gpu_layers``, ``n_layers``, as a fit row)."""
    if fits is None:
        return "?"
    label = FIT_TEXT.get(fits, fits)
    label = f"{label} (needs {format_size(total_gb * GB)})" if total_gb else label
    verdict = getattr(offload, "offload", None)
    if verdict == GPU:
        return f"{label}, all on GPU"
    if verdict == PARTIAL:
        return f"{label}, {offload.gpu_layers}/{offload.n_layers} layers on GPU ({PARTIAL_NOTE})"
    return label


class SearchPanel(Panel):
    """Search the Hub for GGUF models, list a repo's variants, download one.

    Args:
        query: text to fill in (text in the repo id).
        author: a user or organisation to fill in.
        quant: a quantization to require, such as ``Q4_K_M``.
        sort: one of :data:`SORTS`.
        limit: how many repos to list.

    Attributes:
        query, author, quant, sort, limit, search_button: the inputs.
        table: the results (HTML). results: the repo whose variants are listed (a dropdown).
        variants: one row per variant (file, quant, size, fit, Download button).
        download_buttons: the Download button of each variant, by file name.
        download: the embedded :class:`DownloadPanel`. frame: the last search's DataFrame.
    """

    def __init__(
        self,
        query: str = "",
        *,
        author: str = "",
        quant: str | None = None,
        sort: str = "downloads",
        limit: int = 10,
    ) -> None:
        self.query = widgets.Text(value=query, description="Search", placeholder="e.g. qwen 0.5b")
        self.author = widgets.Text(value=author, description="Author", placeholder="any")
        self.quant = widgets.Combobox(
            value=quant or "", options=QUANTS, description="Quant", placeholder="any"
        )
        self.sort = widgets.Dropdown(options=SORTS, value=sort, description="Sort by", style=WIDE)
        self.limit = widgets.BoundedIntText(
            value=limit, min=1, max=MAX_LIMIT, description="Limit", layout={"width": "140px"}
        )
        self.search_button = widgets.Button(
            description="Search", icon="search", button_style="primary"
        )
        self.table = widgets.HTML()
        self.results = widgets.Dropdown(
            description="Variants of", style=WIDE, layout={"width": "60%", "display": "none"}
        )
        self.variants = widgets.GridBox(
            layout={"grid_template_columns": "repeat(5, max-content)", "grid_gap": "2px 16px"}
        )
        self.download_buttons: dict[str, widgets.Button] = {}
        self.download = DownloadPanel()
        self.frame: pd.DataFrame | None = None
        self.status = StatusLine()
        self.task = Task(self.status, busy=[self.search_button, self.results])
        self.search_button.on_click(lambda _: self.search())
        self.results.observe(self._picked, "value")
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.query, self.author]),
                widgets.HBox([self.quant, self.sort, self.limit, self.search_button]),
                self.status,
                self.table,
                self.results,
                self.variants,
                self.download.widget,
            ]
        )
        self.widget.add_class("offgrid-search")

    def search(self) -> None:
        """Search with the current inputs, in the background (what the Search button does)."""
        query = self.query.value
        options = {
            "author": self.author.value,
            "quant": self.quant.value,
            "sort": self.sort.value,
            "limit": self.limit.value,
        }
        self.task.start(lambda _: self._search(query, options), "Searching the Hub...")

    def _search(self, query: str, options: dict) -> None:
        df = search(query, **options)
        self.frame = df
        self.table.value = results_table(df)
        ids = list(df["id"])
        self.results.options = ids
        self.results.layout.display = "flex" if ids else "none"
        if not ids:
            self._list([])
            self.status.show("No results.")
            return
        self.results.value = ids[0]
        self._variants(ids[0])

    def _picked(self, change: dict) -> None:
        # While a search runs, it lists the first repo's variants itself.
        if change["new"] and not self.task.running:
            repo_id = change["new"]
            self.task.start(lambda _: self._variants(repo_id), f"Reading {repo_id}...")

    def _variants(self, repo_id: str) -> None:
        self.status.show(f"Reading the variants of {repo_id} and what fits this machine...")
        fits = recommend(repo_id)
        self.download_buttons = {}
        cells: list[widgets.Widget] = [widgets.HTML(f"<b>{h}</b>") for h in VARIANT_HEADER]
        for row in fits.itertuples(index=False):
            button = widgets.Button(
                description="Download", icon="download", tooltip=f"Download {row.filename}"
            )
            button.on_click(lambda _, name=row.filename: self.download.start(repo_id, name))
            self.download_buttons[row.filename] = button
            star = " ★ recommended" if row.recommended else ""
            fit = widgets.Label(_fit_text(row.fits, row.total_gb, row), tooltip=row.error)
            cells += [
                widgets.HTML(f"<code>{html.escape(row.filename)}</code>{star}"),
                widgets.Label(row.quant or "?"),
                widgets.Label(format_size(row.size)),
                fit,
                button,
            ]
        self._list(cells)
        shown = len(self.frame) if self.frame is not None else 0
        self.status.show(f"{shown} models; {repo_id} has {len(fits)} variants.")

    def _list(self, cells: list[widgets.Widget]) -> None:
        old = self.variants.children
        self.variants.children = cells
        for cell in old:
            cell.close()
