"""What a model downloaded into our folder came from: the ``<file>.offgrid.json`` manifest.

:mod:`offgrid_nb.download` writes it beside the first file of each model it fetches (the repo,
revision, commit and the sha256 of every shard); :mod:`offgrid_nb.library` reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from .jsonfile import read_json, write_json

MANIFEST_SUFFIX = ".offgrid.json"


@dataclass(frozen=True)
class ManifestFile:
    """One file of a downloaded model: its path in the repo, sha256 and size."""

    path: str
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class Manifest:
    """Where a downloaded model came from; stored as JSON beside its first file."""

    repo_id: str
    revision: str
    commit: str | None
    filename: str  # the first file's path in the repo
    files: tuple[ManifestFile, ...]
    quant: str | None
    param_size: str | None
    downloaded_at: str  # ISO 8601, UTC

    def save(self, model_path: Path) -> None:
        """Write the manifest of ``model_path`` atomically."""
        write_json(manifest_path(model_path), asdict(self), indent=2)

    @classmethod
    def load(cls, model_path: Path) -> Manifest | None:
        """The manifest of ``model_path``; ``None`` when there is none or it is unreadable."""
        data = read_json(manifest_path(model_path))
        try:
            files = tuple(ManifestFile(**f) for f in data["files"])
            return cls(**{k: v for k, v in data.items() if k != "files"}, files=files)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def sha256_of(self, local_file: Path) -> str | None:
        """The recorded sha256 of a shard, matched by file name (shards share one folder)."""
        return next((f.sha256 for f in self.files if Path(f.path).name == local_file.name), None)


def manifest_path(model_path: Path) -> Path:
    """Where the manifest of the model whose first file is ``model_path`` lives."""
    return model_path.with_name(model_path.name + MANIFEST_SUFFIX)


__all__ = ["MANIFEST_SUFFIX", "Manifest", "ManifestFile", "manifest_path"]
