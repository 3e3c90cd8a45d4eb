"""Jobs: downloads (each in its own thread) and perplexity/quality runs (one at a time, on a
place at the model gate); the registries answer progress and cancel.

A job's thread only assigns attributes (``progress`` as it goes, then its result or ``error``,
then ``outcome``); the IOLoop reads them. The last :data:`KEEP_FINISHED` finished downloads and
:data:`KEEP_RUNS` finished runs are kept.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..download import DownloadProgress, download
from ..errors import DownloadCancelledError, OffgridError, RunCancelledError, ServerBusyError
from ..library import find_model
from ..perplexity import ChunkProgress
from .threads import ModelGate, in_thread

KEEP_FINISHED = 100
KEEP_RUNS = 20  # finished perplexity/quality runs kept for GET
MAX_WAITING_RUNS = 4  # runs queued behind the running one; more is a 503
GATE_RETRY = 0.2  # seconds between looks at the model gate while a run waits for a place
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


RunWork = Callable[[Callable[[ChunkProgress], None], threading.Event], Any]


@dataclass
class RunJob:
    """One perplexity or quality run: queued, then running in its thread, then its outcome."""

    kind: str  # "perplexity" or "quality"
    request: dict[str, Any]  # the checked parameters, as the job's JSON shows them
    work: RunWork = field(repr=False)  # (progress, cancel) -> the JSON result, in the thread
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False  # it has its turn and its place at the gate (set on the IOLoop)
    progress: ChunkProgress | None = None
    outcome: str | None = None  # "done", "failed" or "cancelled" once ended
    error: OffgridError | None = None
    result: Any = None
    task: asyncio.Future[None] | None = field(default=None, repr=False)  # kept: held weakly

    @property
    def status(self) -> str:
        """queued, running or cancelling; then done, failed or cancelled."""
        if self.outcome is not None:
            return self.outcome
        if not self.started:
            return "queued"
        return "cancelling" if self.cancel.is_set() else "running"

    @property
    def finished(self) -> bool:
        """It has ended (or was cancelled before it started)."""
        return self.outcome is not None

    def stop(self) -> None:
        """Cancel it (on the IOLoop): at once while queued, else at its next decode."""
        self.cancel.set()
        if not self.started and self.outcome is None:
            self.error, self.outcome = RunCancelledError("The run was cancelled"), "cancelled"

    def _update(self, event: ChunkProgress) -> None:
        self.progress = event

    def run(self) -> None:
        """Do the work (in the job's thread), then record the outcome."""
        try:
            self.result = self.work(self._update, self.cancel)
            self.outcome = "done"
        except (RunCancelledError, DownloadCancelledError) as exc:
            self.error, self.outcome = exc, "cancelled"
        except OffgridError as exc:
            self.error, self.outcome = exc, "failed"
        except Exception as exc:  # a bug of ours or of a library: report it, do not lose it
            _log.exception("%s job %s failed", self.kind, self.id)
            self.error = OffgridError(f"Unexpected {type(exc).__name__}: {exc}")
            self.outcome = "failed"


class RunJobs:
    """The registry of perplexity and quality runs: one runs at a time, holding a place at the
    model gate (so chats are refused, not starved, past the gate's bound), at most
    :data:`MAX_WAITING_RUNS` wait behind it. Used from the IOLoop thread only.
    """

    def __init__(self, gate: ModelGate, after: Callable[[], None]) -> None:
        self.gate = gate
        self.after = after  # called on the IOLoop after each run (the model's keep-alive)
        self.jobs: dict[str, RunJob] = {}
        self._turn = asyncio.Lock()

    def of_kind(self, kind: str) -> list[RunJob]:
        """The kept jobs of ``kind``, oldest first."""
        return [job for job in self.jobs.values() if job.kind == kind]

    def get(self, kind: str, job_id: str) -> RunJob | None:
        """The job of ``kind`` with this id, if known."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.kind == kind else None

    def start(self, kind: str, request: dict[str, Any], work: RunWork) -> RunJob:
        """Queue a run of ``work``; it starts when the runs before it have ended.

        Raises:
            ServerBusyError: :data:`MAX_WAITING_RUNS` runs are waiting already.
        """
        waiting = [job for job in self.jobs.values() if not job.started and not job.finished]
        if len(waiting) >= MAX_WAITING_RUNS:
            raise ServerBusyError(
                f"{len(waiting)} perplexity/quality runs are waiting, the most this server allows",
                hint="wait for one to finish, or cancel one (DELETE /v1/perplexity/ID)",
            )
        self._forget_old()
        job = RunJob(kind, request, work)
        self.jobs[job.id] = job
        job.task = asyncio.ensure_future(self._run(job))
        return job

    async def _run(self, job: RunJob) -> None:
        async with self._turn:
            while not job.finished and self.gate.in_flight >= self.gate.limit:
                await asyncio.sleep(GATE_RETRY)
            if job.finished:  # cancelled while it waited
                return
            with self.gate.slot():
                job.started = True
                await in_thread(job.run)
            self.after()

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self.jobs.items() if job.finished]
        for job_id in finished[: max(0, len(finished) - KEEP_RUNS + 1)]:
            del self.jobs[job_id]
