"""How long the servers keep a model loaded after its last request (Ollama's ``keep_alive``).

A Jupyter server should not hold gigabytes forever: after each request the model it used is
given a deadline (the request's ``keep_alive``, else the server's default, 5 minutes as in
Ollama); a check scheduled on the IOLoop for the earliest deadline unloads the models whose
deadline passed once no model work is in flight.
``0`` unloads right after the request, a negative value keeps it until the server stops.

One check is pending at a time (a new deadline replaces it), and it runs in an empty
``contextvars.Context``: a timer scheduled from a handler otherwise keeps a copy of the
handler's context, and jupyter_server's context holds the handler itself, so each request's
handler, reply and prompt (a Jinja environment) stayed alive until its timer fired.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
from pathlib import Path
from typing import Any

from ..engine import loaded_model, loaded_models, unload_model
from ..errors import InvalidArgumentError
from .threads import ModelGate, in_thread

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ms|s|m|h)?")


def parse_duration(value: Any) -> float:
    """Seconds from Ollama's forms: a number of seconds, or ``"10m"``, ``"1h30m"``, ``"-1"``.

    Raises:
        InvalidArgumentError: anything else.
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"Invalid keep_alive: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip().lower() if isinstance(value, str) else ""
    parts = list(_DURATION.finditer(text))
    if not text or "".join(p.group(0) for p in parts) != text:
        raise InvalidArgumentError(
            f"Invalid keep_alive: {value!r}", hint="seconds, or a duration such as 5m, 1h, 0, -1"
        )
    return sum(float(p.group(1)) * _UNITS[p.group(2) or "s"] for p in parts)


class KeepAlive:
    """Each loaded model's deadline, and the IOLoop check that unloads those whose passed."""

    def __init__(self, default_seconds: float, gate: ModelGate) -> None:
        self.default_seconds = default_seconds
        self.gate = gate
        # time.time() by model file; None: kept until the server stops
        self.deadlines: dict[Path, float | None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._checking: asyncio.Future[None] | None = None  # kept: the loop holds tasks weakly

    def expires_at(self, path: Path) -> float | None:
        """When ``path``'s model is unloaded (``None``: kept until the server stops)."""
        return self.deadlines.get(path)

    def touch(self, keep_alive: float | None = None, model: Path | None = None) -> None:
        """A request used ``model`` (default: the most recently used one): keep it
        ``keep_alive`` seconds (default: the setting).

        Call on the IOLoop, after the request's work ended.
        """
        if model is None:
            recent = loaded_model()
            if recent is None:
                return
            model = recent.path
        seconds = self.default_seconds if keep_alive is None else keep_alive
        self.deadlines[model.resolve()] = None if seconds < 0 else time.time() + seconds
        self._schedule()

    def _schedule(self, retry: float | None = None) -> None:
        """One timer, for the earliest deadline (models unloaded meanwhile are forgotten), or
        in ``retry`` seconds."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loaded = {model.path for model in loaded_models()}
        for path in [path for path in self.deadlines if path not in loaded]:
            del self.deadlines[path]
        times = [t for t in self.deadlines.values() if t is not None]
        if not times:
            return
        delay = max(min(times) - time.time(), 0.0) if retry is None else retry
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            delay, self._start_check, context=contextvars.Context()
        )  # an empty context: no request's handler is kept alive by the timer

    def _start_check(self) -> None:
        self._timer = None
        self._checking = asyncio.ensure_future(self._check())

    async def _check(self) -> None:
        if self.gate.in_flight:  # in use now: look again soon (a request ending touches too)
            self._schedule(retry=1.0)
            return
        now = time.time()
        for path, deadline in list(self.deadlines.items()):
            if deadline is not None and deadline <= now:
                del self.deadlines[path]
                await in_thread(unload_model, path)
        self._schedule()
