"""LM Studio's models folder (``lmstudio``): ``~/.lmstudio/models/<org>/<repo>/*.gguf``, and
the older ``~/.cache/lm-studio/models``. ``<org>/<repo>`` is the Hub repo LM Studio fetched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import LocalModel, file_model, glob_files, group_models


@dataclass(frozen=True)
class LMStudioFolders:
    """LM Studio's model folders (the first that holds a model wins its key)."""

    roots: tuple[Path, ...]
    id: str = "lmstudio"

    def models(self) -> Iterator[LocalModel]:
        """Every complete model in the folders (see :class:`~.base.ModelSource`)."""
        for root in self.roots:
            for name, files in group_models(glob_files(root, "*/*/**/*.gguf")):
                org, repo = files[0].relative_to(root).parts[:2]
                yield file_model(self.id, root, name, files, repo_id=f"{org}/{repo}")

    def removal_hint(self, model: LocalModel) -> str:
        """LM Studio owns its folder."""
        return "delete it in LM Studio (My Models), which owns that folder"
