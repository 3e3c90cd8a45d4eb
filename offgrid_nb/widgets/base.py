"""What every panel shares: being displayable, a status line, and one worker thread.

Long actions (a search, a download, a reply, a benchmark) run in a daemon thread so the kernel
stays usable. ipywidgets 8 sends trait changes made in that thread over the comm, which the
front end applies like any other update; panels batch them (``hold_sync``) and throttle fast
streams. Nothing is ever raised in the thread: every error ends up in the status line.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets
import traitlets

from ..errors import OffgridError

_log = logging.getLogger(__name__)

Action = Callable[[threading.Event], None]


class StatusLine(widgets.HTML):
    """One line under a panel: what it is doing, what it did, or what went wrong.

    ``kind`` is ``""`` (empty), ``"note"`` or ``"error"``; errors are announced to screen
    readers (``role="alert"``), notes politely (``role="status"``).
    """

    kind = traitlets.Unicode("")

    def show(self, text: str) -> None:
        """A note, such as "Searching..." or "Saved to ...", replacing the previous line."""
        with self.hold_trait_notifications():
            self.value = f'<div role="status">{html.escape(text)}</div>' if text else ""
            self.kind = "note" if text else ""

    def show_error(self, error: BaseException | str) -> None:
        """An error: an :class:`OffgridError`'s message and hint, else the exception's text."""
        if isinstance(error, OffgridError):
            message, hint = error.message, error.hint
        elif isinstance(error, BaseException):
            message, hint = f"{type(error).__name__}: {error}", None
        else:
            message, hint = error, None
        extra = f"<br><small>{html.escape(hint)}</small>" if hint else ""
        with self.hold_trait_notifications():
            self.value = (
                '<div role="alert" class="offgrid-error" '
                'style="color: var(--jp-error-color1, #c62828)">'
                f"⚠ {html.escape(message)}{extra}</div>"
            )
            self.kind = "error"


class Task:
    """Runs a panel's long actions one at a time in a daemon thread.

    While an action runs, the ``busy`` widgets are disabled and ``cancel_button`` is enabled;
    the action receives a :class:`threading.Event` that the cancel button (or :meth:`cancel`)
    sets, and checks it between steps. An exception ends the action and is shown in ``status``.
    """

    def __init__(
        self,
        status: StatusLine,
        *,
        busy: Iterable[widgets.DOMWidget] = (),
        cancel_button: widgets.Button | None = None,
    ) -> None:
        self.status = status
        self.busy = list(busy)
        self.cancel_button = cancel_button
        self.cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        if cancel_button is not None:
            cancel_button.disabled = True
            cancel_button.on_click(lambda _: self.cancel())

    @property
    def running(self) -> bool:
        """Whether an action is running now."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, action: Action, note: str) -> None:
        """Run ``action`` in the background, showing ``note`` (refused while one runs)."""
        if self.running:  # only code gets here: the buttons are disabled meanwhile
            self.status.show_error("Busy: wait for the current action to end, or cancel it")
            return
        self.cancelled = threading.Event()
        self._set_busy(True)
        self.status.show(note)
        self._thread = threading.Thread(
            target=self._run, args=(action, self.cancelled), name="offgrid-panel", daemon=True
        )
        self._thread.start()

    def cancel(self) -> None:
        """Ask the running action to stop at its next check."""
        self.cancelled.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running action ends; ``False`` if it is still running at ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _run(self, action: Action, cancelled: threading.Event) -> None:
        try:
            action(cancelled)
        except Exception as exc:
            if not isinstance(exc, OffgridError):  # a bug: the traceback for those who log
                _log.debug("offgrid_nb panel action failed", exc_info=True)
            self.status.show_error(exc)
        finally:
            self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        for widget in self.busy:
            widget.disabled = busy
        if self.cancel_button is not None:
            self.cancel_button.disabled = not busy


class Displayable:
    """Shows ``self.widget`` when the object is a cell's value or passed to ``display()``."""

    widget: widgets.DOMWidget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kwargs)


class Panel(Displayable):
    """A displayable group of widgets with a status line and a worker for its long actions."""

    status: StatusLine
    task: Task

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel's current action ends (for scripts and tests).

        Returns:
            ``False`` if it is still running after ``timeout`` seconds.
        """
        return self.task.wait(timeout)
