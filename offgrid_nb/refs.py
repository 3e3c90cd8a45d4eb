"""Hub model references as users type them: ``owner/repo``, ``owner/repo:QUANT``,
``owner/repo/path/in/repo.gguf``, each optionally after ``hf.co/`` (as Ollama and llama.cpp
accept). Pure parsing: nothing here touches the Hub or the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HUB_PREFIXES = ("https://huggingface.co/", "hf.co/", "huggingface.co/")
DEFAULT_TAG = "latest"  # Ollama's tag for "the default": here, the recommended variant
_NAME = r"\w[\w.-]*"  # a user or repo name on the Hub: no leading "." or "-"
_HUB_REF = re.compile(
    rf"(?P<repo>{_NAME}/{_NAME})(?::(?P<quant>[\w.-]+)|/(?P<file>.+\.gguf))?", re.ASCII
)


@dataclass(frozen=True)
class HubModel:
    """A model on the Hub: a repo and a file or a quantization.

    With neither, the repo's recommended variant (:func:`offgrid_nb.hub.best_variant`).
    """

    repo_id: str
    file: str | None = None
    quant: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        if self.file:
            return f"{self.repo_id}/{self.file}"
        return f"{self.repo_id}:{self.quant}" if self.quant else self.repo_id


def strip_hub_prefix(text: str) -> str:
    """``text`` without a leading ``hf.co/`` (or ``huggingface.co/``, or its https URL)."""
    for prefix in HUB_PREFIXES:
        if text.lower().startswith(prefix):
            return text[len(prefix) :]
    return text


def parse_hub_ref(text: str) -> HubModel | None:
    """The Hub model ``text`` names, or ``None`` when it is not shaped like a reference.

    Args:
        text: ``owner/repo``, ``owner/repo:QUANT`` (``:latest`` is the recommended variant),
            ``owner/repo/path/in/repo.gguf``, each optionally after ``hf.co/``.

    Returns:
        The :class:`HubModel`; whether the repo exists is not checked.
    """
    match = _HUB_REF.fullmatch(strip_hub_prefix(text.strip()))
    if match is None:
        return None
    quant = match["quant"]
    return HubModel(
        match["repo"], file=match["file"], quant=None if quant == DEFAULT_TAG else quant
    )


__all__ = ["HubModel", "parse_hub_ref", "strip_hub_prefix"]
