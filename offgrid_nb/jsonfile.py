"""Small files (manifests, caches, sidecars, saved runs) written atomically.

A crash or a full disk mid-write must never leave a half-written file under the final name:
the text goes to a temporary file beside it (unique per process and thread), which then
replaces the target in one ``os.replace``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


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
