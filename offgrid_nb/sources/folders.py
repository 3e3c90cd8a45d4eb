"""Extra folders of GGUF files (``folder``): the ones listed in ``OFFGRID_MODEL_DIRS``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import LocalModel, file_model, glob_files, group_models


@dataclass(frozen=True)
class ExtraFolders:
    """GGUF files anywhere under the given folders, used in place."""

    roots: tuple[Path, ...]
    id: str = "folder"

    def models(self) -> Iterator[LocalModel]:
        """Every complete model under the folders (see :class:`~.base.ModelSource`)."""
        for root in self.roots:
            for name, files in group_models(glob_files(root)):
                yield file_model(self.id, root, name, files)

    def removal_hint(self, model: LocalModel) -> str:
        """Files in the user's own folders are the user's to delete."""
        return f"it is in a folder of OFFGRID_MODEL_DIRS: delete {model.path} yourself"
