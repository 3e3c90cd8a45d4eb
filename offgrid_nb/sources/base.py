"""What every model source shares: the :class:`LocalModel` record, the :class:`ModelSource`
interface, and grouping GGUF files into models (shards of a split model are one model)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .. import names
from ..manifest import Manifest

OFFGRID = "offgrid"


@dataclass(frozen=True)
class LocalModel:
    """A model on this machine: one GGUF file, or all shards of a split model.

    ``name`` is what to call it: in a source's own listing its name there (the file name
    without ``.gguf`` and shard suffix; Ollama's ``llama3.2:1b``), in the library's listing a
    name unique across sources (see :func:`offgrid_nb.library.scan`).
    """

    name: str
    files: tuple[Path, ...]  # shard 1 first
    manifest: Manifest | None  # ours, for models downloaded into our folder
    source: str = OFFGRID
    key: str = ""  # unique within its source: a path in its folder, Ollama's name
    repo_id: str | None = None  # the Hub repo it came from, when the source records it
    quant: str | None = None
    param_size: str | None = None

    @property
    def path(self) -> Path:
        """The file llama.cpp loads (shard 1 of a split model)."""
        return self.files[0]


class ModelSource(Protocol):
    """A place where models live. Sources other than our folder are read-only to us."""

    id: str  # offgrid, hf-cache, lmstudio, ollama, llama.cpp, folder

    def models(self) -> Iterator[LocalModel]:
        """Every complete model the source has; nothing (never an error) when its folder is
        missing or unreadable. Cheap: no file is hashed, and no model file is opened."""
        ...

    def removal_hint(self, model: LocalModel) -> str:
        """How the user deletes one of its models with the tool that owns it."""
        ...


def model_name(path: Path) -> str:
    """A GGUF file's model name: its name without ``.gguf`` and shard suffix."""
    variant = names.parse_filename(path.name).variant
    return variant[: -len(".gguf")] if variant.lower().endswith(".gguf") else variant


def group_models(paths: Iterable[Path]) -> Iterator[tuple[str, tuple[Path, ...]]]:
    """``(name, files)`` for every complete model among ``paths``: model files only (no
    projector or imatrix), a split model once with all its shards in order, and none with a
    missing shard (or a download in progress)."""
    groups: dict[tuple[Path, str], list[tuple[int, int, Path]]] = {}
    for path in paths:
        if names.is_model_file(path.name) and path.is_file():
            index, total = names.parse_shard(path.name) or (1, 1)
            groups.setdefault((path.parent, model_name(path)), []).append((index, total, path))
    for (_, name), shards in groups.items():
        shards.sort()
        if [index for index, _, _ in shards] == list(range(1, shards[0][1] + 1)):
            yield name, tuple(path for _, _, path in shards)


def glob_files(root: Path, pattern: str = "**/*.gguf") -> Iterator[Path]:
    """The paths under ``root`` matching ``pattern`` (default: every ``.gguf``); none when
    ``root`` is missing or unreadable."""
    try:
        if root.is_dir():
            yield from root.glob(pattern)
    except OSError:
        return


def file_model(
    source: str,
    root: Path,
    name: str,
    files: tuple[Path, ...],
    *,
    manifest: Manifest | None = None,
    key: str | None = None,
    **fields: str | None,
) -> LocalModel:
    """A model found as plain files under ``root`` (quant and size from the file name unless
    given); its key, unless given, is its first file's path in ``root``."""
    parsed = names.parse_filename(files[0].name)
    fields = {"quant": parsed.quant, "param_size": parsed.param_size, **fields}
    key = key or files[0].relative_to(root).as_posix()
    return LocalModel(name, files, manifest, source, key, **fields)  # type: ignore[arg-type]


__all__ = [
    "OFFGRID",
    "LocalModel",
    "ModelSource",
    "file_model",
    "glob_files",
    "group_models",
    "model_name",
]
