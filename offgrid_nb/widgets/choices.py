"""The local models folder as options for a model picker (chat and benchmark panels)."""

from __future__ import annotations

import os
from pathlib import Path

from ..library import list_models
from ..sizes import format_size

Option = tuple[str, str]  # (label, path)


def local_models() -> list[Option]:
    """One option per model in the models folder: ``("name (size)", path)``."""
    return [
        (f"{row.name} ({format_size(row.size)})", row.path)
        for row in list_models().itertuples(index=False)
    ]


def including(options: list[Option], model: str | os.PathLike[str]) -> tuple[list[Option], str]:
    """``options`` with ``model`` (a path or a library name) among them, and its value.

    A model that matches no option by path or name is added as it was given; the core
    resolves it (or explains why it cannot) when it is used.
    """
    text = str(model)
    path = Path(text).expanduser().resolve()
    for label, value in options:
        if text in (value, label.rsplit(" (", 1)[0]) or path == Path(value).resolve():
            return options, value
    return [*options, (text, text)], text
