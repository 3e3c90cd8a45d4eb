"""``panel()``: search, download, chat and benchmark as one tabbed app."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets

from .base import Displayable
from .bench import BenchmarkPanel
from .chat import ChatPanel
from .search import SearchPanel

TITLES = ("Search", "Download", "Chat", "Benchmark")


class OffgridApp(Displayable):
    """The four panels in tabs. The Download tab shows the search panel's download, and each
    finished download appears in the Chat and Benchmark pickers.

    Attributes:
        search, download, chat, benchmark: the panels. widget: the :class:`ipywidgets.Tab`.
    """

    def __init__(self) -> None:
        self.search = SearchPanel()
        self.download = self.search.download
        self.chat = ChatPanel()
        self.benchmark = BenchmarkPanel()
        self.download.on_done(self._downloaded)
        panels = (self.search, self.download, self.chat, self.benchmark)
        self.widget = widgets.Tab(children=[p.widget for p in panels], titles=TITLES)
        self.widget.add_class("offgrid-app")

    def _downloaded(self, path: Path) -> None:
        self.chat.refresh(None if self.chat.model.value else path)
        self.benchmark.refresh()


def panel() -> OffgridApp:
    """The notebook app: Search, Download, Chat and Benchmark tabs."""
    return OffgridApp()
