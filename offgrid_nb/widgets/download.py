"""``DownloadPanel``: one model download with progress, Cancel, and resume on retry."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets

from ..download import DownloadProgress, download
from ..errors import DownloadCancelledError
from ..render import progress_line
from .base import Panel, StatusLine, Task

BAR_STYLES = {"done": "success", "error": "danger", "cancelled": "warning"}


class DownloadPanel(Panel):
    """Download a model file from the Hub into the models folder.

    A cancelled or failed download keeps its partial file: the button then reads "Resume" and
    continues where it stopped. The search panel embeds one and fills in the repo and file.

    Args:
        repo_id: ``owner/name`` to fill in.
        file: the file to fill in (empty: the recommended variant).

    Attributes:
        repo_id, file: the inputs. progress: the bar (0 to 1). detail: bytes, speed and ETA.
        start_button, cancel_button: Download / Resume and Cancel. status: notes and errors.
        path: the downloaded file, once done.
    """

    def __init__(self, repo_id: str = "", file: str = "") -> None:
        wide = {"width": "48%"}
        self.repo_id = widgets.Text(
            value=repo_id, description="Repo", placeholder="owner/name", layout=wide
        )
        self.file = widgets.Text(
            value=file, description="File", placeholder="recommended variant", layout=wide
        )
        self.start_button = widgets.Button(
            description="Download", icon="download", button_style="primary"
        )
        self.cancel_button = widgets.Button(description="Cancel", icon="stop")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress")
        self.detail = widgets.Label()
        self.status = StatusLine()
        self.path: Path | None = None
        self._on_done: list[Callable[[Path], None]] = []
        self.task = Task(
            self.status,
            busy=[self.repo_id, self.file, self.start_button],
            cancel_button=self.cancel_button,
        )
        self.start_button.on_click(lambda _: self.start())
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.repo_id, self.file]),
                widgets.HBox([self.start_button, self.cancel_button]),
                widgets.HBox([self.progress, self.detail]),
                self.status,
            ]
        )
        self.widget.add_class("offgrid-download")

    def start(self, repo_id: str | None = None, file: str | None = None) -> None:
        """Download (or resume) ``repo_id``/``file`` in the background, like the button does.

        Args:
            repo_id: replaces the Repo input when given.
            file: replaces the File input when given (empty: the recommended variant).
        """
        repo = (self.repo_id.value if repo_id is None else repo_id).strip()
        name = (self.file.value if file is None else file).strip() or None
        note = f"Downloading {name or 'the recommended variant'} from {repo}..."
        self.task.start(lambda cancel: self._download(repo, name, cancel), note)

    def cancel(self) -> None:
        """Stop the download; the partial file is kept for the next start."""
        self.task.cancel()

    def on_done(self, callback: Callable[[Path], None]) -> None:
        """Call ``callback(path)`` (in the worker thread) after each finished download."""
        self._on_done.append(callback)

    def _download(self, repo: str, name: str | None, cancel: threading.Event) -> None:
        self.repo_id.value, self.file.value = repo, name or ""
        self._set_bar(0.0, "", "")
        try:
            self.path = download(repo, name, progress=self._show, cancel=cancel)
        except DownloadCancelledError as exc:
            self._finish("cancelled", "Resume")
            self.status.show(f"{exc.message}; the partial file is kept: Resume continues it")
            return
        except Exception:
            self._finish("error", "Retry")
            raise
        self._finish("done", "Download")
        self.status.show(f"Saved to {self.path}")
        for callback in self._on_done:
            callback(self.path)

    def _show(self, event: DownloadProgress) -> None:
        text = f"{event.filename} · " + progress_line(event).removeprefix("Progress: ")
        self._set_bar(event.fraction or 0.0, text, "info")
        if event.status == "verifying":
            self.status.show(f"Verifying {event.filename} (sha256)...")

    def _set_bar(self, fraction: float, text: str, style: str) -> None:
        with self.progress.hold_sync():
            self.progress.value = fraction
            self.progress.bar_style = style
        self.detail.value = text

    def _finish(self, outcome: str, button: str) -> None:
        with self.progress.hold_sync():
            self.progress.bar_style = BAR_STYLES[outcome]
            if outcome == "done":
                self.progress.value = 1.0
        self.start_button.description = button
