"""Our own models folder (``offgrid``): ``<models_dir>/<org>/<repo>/<path in repo>``, with a
manifest beside each downloaded model; GGUF files copied in by hand are models too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..manifest import Manifest
from .base import OFFGRID, LocalModel, file_model, glob_files, group_models


@dataclass(frozen=True)
class OffgridFolder:
    """The models folder offgrid downloads into (the only source we ever write to)."""

    root: Path
    id: str = OFFGRID

    def models(self) -> Iterator[LocalModel]:
        """Every complete model in the folder (see :class:`~.base.ModelSource`)."""
        for name, files in group_models(glob_files(self.root)):
            manifest = Manifest.load(files[0])
            if manifest is None:
                yield file_model(self.id, self.root, name, files)
                continue
            recorded = {
                "repo_id": manifest.repo_id,
                "quant": manifest.quant,
                "param_size": manifest.param_size,
            }
            yield file_model(self.id, self.root, name, files, manifest=manifest, **recorded)

    def removal_hint(self, model: LocalModel) -> str:
        """``offgrid rm`` deletes our own models."""
        return f"offgrid rm {model.name}"
