"""Download jobs: each download runs in its own thread; the registry answers progress and cancel.

A job's thread only assigns attributes (``progress`` as it goes, then ``model`` or ``error``,
then ``outcome``); the IOLoop reads them. The last :data:`KEEP_FINISHED` finished jobs are kept.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..download import DownloadProgress, download
from ..errors import DownloadCancelledError, OffgridError, ServerBusyError
from ..library import find_model

KEEP_FINISHED = 100
_log = logging.getLogger(__name__)


@dataclass
class DownloadJob:
    """One download: its progress while it runs, its outcome once it ended."""

    repository: str
    file_name: str
    models_dir: Path | None = None
    connections: int | None = None  # None: the download_connections setting
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: DownloadProgress | None = None
    outcome: str | None = None  # "done", "failed" or "cancelled" once the thread ended
    error: OffgridError | None = None
    model: str | None = None  # the library name to chat with, once done

    @property
    def status(self) -> str:
        """starting, downloading, verifying or cancelling; then done, failed or cancelled."""
        if self.outcome is not None:
            return self.outcome
        if self.cancel.is_set():
            return "cancelling"
        if self.progress is None or self.progress.status == "done":  # "done": not recorded yet
            return "starting" if self.progress is None else "verifying"
        return self.progress.status

    @property
    def finished(self) -> bool:
        """The thread has ended."""
        return self.outcome is not None

    def _update(self, event: DownloadProgress) -> None:
        self.progress = event

    def run(self) -> None:
        """Download (in the job's thread), then record the outcome."""
        try:
            path = download(
                self.repository,
                self.file_name,
                models_dir=self.models_dir,
                progress=self._update,
                cancel=self.cancel,
                connections=self.connections,
            )
            self.model = find_model(str(path), self.models_dir).name
            self.outcome = "done"
        except DownloadCancelledError as exc:
            self.error, self.outcome = exc, "cancelled"
        except OffgridError as exc:
            self.error, self.outcome = exc, "failed"
        except Exception as exc:  # a bug of ours or of a library: report it, do not lose it
            _log.exception("download job %s failed", self.id)
            self.error = OffgridError(f"Unexpected {type(exc).__name__}: {exc}")
            self.outcome = "failed"


class DownloadJobs:
    """The registry: job id -> :class:`DownloadJob`, at most ``max_running`` running at once."""

    def __init__(self, max_running: int) -> None:
        self.max_running = max_running
        self.jobs: dict[str, DownloadJob] = {}

    def running(self) -> list[DownloadJob]:
        """Jobs whose thread has not ended."""
        return [job for job in self.jobs.values() if not job.finished]

    def get(self, job_id: str) -> DownloadJob | None:
        """The job with this id, if known."""
        return self.jobs.get(job_id)

    def start(
        self,
        repository: str,
        file_name: str,
        models_dir: Path | None,
        *,
        connections: int | None = None,
    ) -> DownloadJob:
        """A new job downloading ``file_name`` of ``repository`` over ``connections``, or the
        one already doing it (unless that one is being cancelled).

        Raises:
            ServerBusyError: ``max_running`` downloads are running already.
        """
        running = self.running()
        for job in running:
            same = (job.repository, job.file_name) == (repository, file_name)
            if same and not job.cancel.is_set():
                return job
        if len(running) >= self.max_running:
            raise ServerBusyError(
                f"{len(running)} downloads are running, the most this server allows",
                hint="wait for one to finish, or cancel one (DELETE /v1/models/download/ID)",
            )
        self._forget_old()
        job = DownloadJob(repository, file_name, models_dir, connections)
        self.jobs[job.id] = job
        threading.Thread(target=job.run, name=f"offgrid-download-{job.id}", daemon=True).start()
        return job

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self.jobs.items() if job.finished]
        for job_id in finished[: max(0, len(finished) - KEEP_FINISHED + 1)]:
            del self.jobs[job_id]
