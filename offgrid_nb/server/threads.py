"""Blocking work off the IOLoop, and the bound on model work waiting for the model.

Why our own threads rather than ``run_in_executor``: pool threads are joined when the
interpreter exits, so a Jupyter server asked to stop would wait for a running download or
benchmark; and idle pool threads stay alive after a request. One daemon thread per call ends
with its call (downloads resume after an interruption, so killing one at exit is safe), and
every call is bounded by its endpoint (the model gate below, the download jobs' limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import ServerBusyError

T = TypeVar("T")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
    """Run ``fn(*args, **kwargs)`` in a new daemon thread; await the returned future."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        result, error = None, None
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (shutdown)
            loop.call_soon_threadsafe(_settle, future, result, error)

    name = getattr(fn, "__name__", "work")
    threading.Thread(target=run, name=f"offgrid-{name}", daemon=True).start()
    return future


class ModelGate:
    """Counts model work (generations, benchmarks) in flight: ``parallel`` run, ``max_waiting``
    wait.

    The core schedules the work itself (slots, a benchmark alone: :mod:`offgrid_nb.batching`);
    the gate only refuses work beyond the bound before any thread starts. Used from the IOLoop
    thread only.
    """

    def __init__(self, max_waiting: int, parallel: int = 1) -> None:
        self.limit = parallel + max_waiting
        self.in_flight = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold a place for one piece of model work, or raise :class:`ServerBusyError`."""
        if self.in_flight >= self.limit:
            raise ServerBusyError(
                f"The server is busy: {self.in_flight} model requests are running or waiting",
                hint="retry in a moment (the bound is max_queued_generations)",
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
