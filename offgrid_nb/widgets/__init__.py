"""Notebook panels over the core (ipywidgets 8): search, download, chat and benchmark.

Each panel is a small displayable class (the value of a cell shows it) that exposes its widgets
as attributes, runs long actions in a worker thread so the kernel stays usable, can cancel them,
and shows every error in its status line instead of a traceback. ``import offgrid_nb`` never
imports ipywidgets; importing this package does, with a clear message when it is missing.

Example:
    >>> from offgrid_nb.widgets import SearchPanel
    >>> SearchPanel("qwen2.5 0.5b")  # type, pick a row, press a variant's Download
"""

from __future__ import annotations

try:
    import ipywidgets
except ImportError as exc:  # pragma: no cover - ipywidgets is a dependency
    raise ImportError(
        "offgrid_nb.widgets needs ipywidgets 8: pip install 'ipywidgets>=8,<9', "
        "then restart the kernel"
    ) from exc

if int(ipywidgets.__version__.split(".")[0]) < 8:  # pragma: no cover
    raise ImportError(
        f"offgrid_nb.widgets needs ipywidgets 8, not {ipywidgets.__version__}: "
        "pip install -U 'ipywidgets>=8,<9', then restart the kernel"
    )

from .app import OffgridApp, panel
from .bench import BenchmarkPanel
from .chat import ChatPanel
from .download import DownloadPanel
from .search import SearchPanel

__all__ = ["BenchmarkPanel", "ChatPanel", "DownloadPanel", "OffgridApp", "SearchPanel", "panel"]
