"""llama-cpp-python, imported once, with llama.cpp's own log captured instead of printed.

llama.cpp writes its log to stderr from C; in a notebook that floods the cell. We install a
log callback that keeps the recent lines in memory, so an error can quote llama.cpp's reason
(for example why a model failed to load) while nothing is printed.
"""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from types import ModuleType
from typing import Any

import numpy as np

_LOG: deque[str] = deque(maxlen=2000)  # chunks; a load logs a few hundred
_lock = threading.Lock()
_state: dict[str, Any] = {}


def llama_cpp() -> ModuleType:
    """The ``llama_cpp`` module, with the log callback installed (first call only)."""
    with _lock:
        if "module" not in _state:
            import llama_cpp as module

            @module.llama_log_callback
            def _capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
                _LOG.append(text.decode("utf-8", errors="replace"))

            module.llama_log_set(_capture, ctypes.c_void_p(0))
            _state["callback"] = _capture  # keep a reference: C holds only a pointer
            _state["module"] = module
        return _state["module"]


def logits_row(ctx: Any, row: int, n_vocab: int) -> np.ndarray:
    """The logits at ``row`` (negative: from the end) of ``ctx``'s last decode, as a numpy view
    of llama.cpp's buffer (no copy: valid until the next decode)."""
    logits = llama_cpp().llama_get_logits_ith(ctx, row)
    return np.ctypeslib.as_array(logits, shape=(n_vocab,))


def greedy_token(ctx: Any, row: int, n_vocab: int) -> int:
    """The token llama.cpp's greedy sampler picks from the logits at ``row`` (negative: from the
    end) of ``ctx``'s last decode: the first highest. Read off the row with numpy, without the
    sampler's copy of every logit into a candidate array (262k of them on Gemma 3: 0.11-0.14
    against 0.49-0.53 ms a token in ``offgrid benchmark`` on 2 cores), a cost paid for each
    generated token."""
    return int(np.argmax(logits_row(ctx, row, n_vocab)))


def recent_log(lines: int = 20) -> list[str]:
    """The last ``lines`` complete lines llama.cpp logged."""
    text = "".join(_LOG)
    return [line for line in text.splitlines() if line.strip()][-lines:]


def clear_log() -> None:
    """Forget the captured log (before an operation whose reason we may want to quote)."""
    _LOG.clear()
