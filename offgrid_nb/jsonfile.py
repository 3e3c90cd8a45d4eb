"""Small files (manifests, caches, sidecars, saved runs) written atomically, and read once.

A crash or a full disk mid-write must never leave a half-written file under the final name:
the text goes to a temporary file beside it (unique per process and thread), which then
replaces the target in one ``os.replace``. :func:`read_json` keeps what it parsed until the
file's size or mtime changes, so listing a library re-reads no unchanged manifest.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

_MAX_CACHED = 4096  # parsed files kept; past that the cache starts again
_parsed: dict[Path, tuple[tuple[int, int], Any]] = {}
_parsed_lock = threading.Lock()


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (parent folders are created).

    Raises:
        OSError: the file could not be written; the target is untouched and no temporary
            file is left behind.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see :func:`write_text`)."""
    write_text(path, json.dumps(data, indent=indent))


def read_json(path: Path) -> Any:
    """The JSON in ``path``, parsed once per version of the file (size and mtime).

    Returns:
        The value; ``None`` when the file is missing, unreadable or not JSON. Callers must not
        change it (it is shared).
    """
    try:
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns)
        with _parsed_lock:
            cached = _parsed.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    with _parsed_lock:
        if len(_parsed) >= _MAX_CACHED:
            _parsed.clear()
        _parsed[path] = (version, value)
    return value
