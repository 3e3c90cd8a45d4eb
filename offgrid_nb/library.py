"""The local models folder: list, resolve, verify and remove models, and their manifests.

Downloads land at ``<models_dir>/<org>/<repo>/<path in repo>``. Beside the first file of each
downloaded model :mod:`offgrid_nb.download` writes ``<file>.offgrid.json`` (a :class:`Manifest`:
where the model came from and the sha256 of every shard). GGUF files copied in by hand are
models too; they just have no manifest. Work files (``.part``, ``.part.json``, ``.lock``) and
split models with missing shards are not models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd
from filelock import FileLock
from filelock import Timeout as LockTimeout

from . import names
from .config import get_settings
from .errors import (
    AlreadyDownloadingError,
    AmbiguousError,
    ChecksumMismatchError,
    InvalidArgumentError,
    NotFoundError,
)
from .jsonfile import write_json

MANIFEST_SUFFIX = ".offgrid.json"
PART_SUFFIX = ".part"  # bytes of a download in progress
SIDECAR_SUFFIX = ".part.json"  # what those bytes are (see offgrid_nb.download)
LOCK_SUFFIX = ".lock"
HASH_BLOCK = 1 << 20  # bytes read at a time when hashing a file
LOCK_POLL = 0.2  # seconds between checks for a cancel while waiting for a lock
StrPath = str | os.PathLike[str]
COLUMNS = [
    "name", "path", "size", "quant", "param_size", "repo_id", "sha256", "downloaded_at",
    "n_shards",
]  # fmt: skip


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
        try:
            data = json.loads(manifest_path(model_path).read_text(encoding="utf-8"))
            files = tuple(ManifestFile(**f) for f in data.pop("files"))
            return cls(**data, files=files)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def sha256_of(self, local_file: Path) -> str | None:
        """The recorded sha256 of a shard, matched by file name (shards share one folder)."""
        return next((f.sha256 for f in self.files if Path(f.path).name == local_file.name), None)


@dataclass(frozen=True)
class LocalModel:
    """A model in the models folder: one GGUF file, or all shards of a split model."""

    name: str
    files: tuple[Path, ...]  # shard 1 first
    manifest: Manifest | None

    @property
    def path(self) -> Path:
        """The file llama.cpp loads (shard 1 of a split model)."""
        return self.files[0]


def is_safe_relative_path(path: str) -> bool:
    """Whether ``path`` is a plain relative ``a/b/c`` path: no absolute path or drive letter,
    no backslash or NUL, no empty, ``.`` or ``..`` part. Untrusted names (remote file names,
    model names in requests) must pass this before they are joined to a folder."""
    return not (
        "\\" in path
        or "\0" in path
        or PurePosixPath(path).is_absolute()
        or bool(PureWindowsPath(path).anchor)
        or any(part in ("", ".", "..") for part in path.split("/"))
    )


def manifest_path(model_path: Path) -> Path:
    """Where the manifest of the model whose first file is ``model_path`` lives."""
    return model_path.with_name(model_path.name + MANIFEST_SUFFIX)


def hash_file(path: Path) -> hashlib._Hash:
    """A sha256 object fed with all of ``path`` (read once, in blocks)."""
    hasher = hashlib.sha256()
    block = bytearray(HASH_BLOCK)
    view = memoryview(block)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(block):
            hasher.update(view[:n])
    return hasher


@contextlib.contextmanager
def model_lock(
    model_path: Path,
    *,
    timeout: float | None = None,
    cancelled: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold the cross-process lock of a model (the one its download holds).

    Args:
        model_path: the model's first file (it need not exist yet).
        timeout: seconds to wait; ``None`` waits as long as it takes, ``0`` does not wait.
        cancelled: an optional callable checked while waiting; it raises to stop waiting.

    Raises:
        AlreadyDownloadingError: the lock is still held by someone else after ``timeout``.
    """
    lock = FileLock(f"{model_path}{LOCK_SUFFIX}")
    waited = 0.0
    while True:
        step = LOCK_POLL if timeout is None else max(0.0, min(LOCK_POLL, timeout - waited))
        try:
            lock.acquire(timeout=step)
            break
        except LockTimeout:
            waited += step
            if cancelled is not None:
                cancelled()
            if timeout is not None and waited >= timeout:
                raise AlreadyDownloadingError(
                    f"{model_path.name} is being downloaded by another process right now",
                    hint="wait for that download to finish, then run the command again",
                ) from None
    try:
        yield
    finally:
        lock.release()


def _root(models_dir: StrPath | None) -> Path:
    return Path(models_dir).expanduser() if models_dir else get_settings().models_dir


def _model_name(path: Path) -> str:
    variant = names.parse_filename(path.name).variant
    return variant[: -len(".gguf")] if variant.lower().endswith(".gguf") else variant


def scan(models_dir: StrPath | None = None) -> list[LocalModel]:
    """Every complete model in the models folder, by name.

    Args:
        models_dir: the folder (default: the configured models folder).

    Returns:
        One :class:`LocalModel` per single-file model and per split model with all its shards.
    """
    root = _root(models_dir)
    groups: dict[tuple[Path, str], list[tuple[int, int, Path]]] = {}
    for path in root.rglob("*.gguf") if root.is_dir() else ():
        if path.is_file() and names.is_model_file(path.name):
            index, total = names.parse_shard(path.name) or (1, 1)
            groups.setdefault((path.parent, _model_name(path)), []).append((index, total, path))
    models = []
    for (_, name), shards in groups.items():
        shards.sort()
        if [index for index, _, _ in shards] != list(range(1, shards[0][1] + 1)):
            continue  # a split model with missing shards (or a download in progress)
        first = shards[0][2]
        files = tuple(path for _, _, path in shards)
        models.append(LocalModel(name, files, Manifest.load(first)))
    return sorted(models, key=lambda m: (m.name.lower(), str(m.path)))


def _row(model: LocalModel) -> dict[str, Any]:
    manifest = model.manifest
    parsed = names.parse_filename(model.path.name)
    return {
        "name": model.name,
        "path": str(model.path),
        "size": sum(p.stat().st_size for p in model.files),
        "quant": manifest.quant if manifest else parsed.quant,
        "param_size": manifest.param_size if manifest else parsed.param_size,
        "repo_id": manifest.repo_id if manifest else None,
        "sha256": manifest.sha256_of(model.path) if manifest else None,
        "downloaded_at": manifest.downloaded_at if manifest else None,
        "n_shards": len(model.files),
    }


def list_models(models_dir: StrPath | None = None) -> pd.DataFrame:
    """The models in the models folder, one row each, by name.

    Args:
        models_dir: the folder (default: ``OFFGRID_MODELS_DIR``, else the platform data dir).

    Returns:
        DataFrame with columns ``name, path, size, quant, param_size, repo_id, sha256,
        downloaded_at, n_shards``; ``size`` covers all shards, ``downloaded_at`` is a UTC
        timestamp; files copied in by hand have no ``repo_id``, ``sha256`` or ``downloaded_at``.
    """
    df = pd.DataFrame([_row(m) for m in scan(models_dir)], columns=COLUMNS)
    df["downloaded_at"] = pd.to_datetime(df["downloaded_at"], utc=True, format="ISO8601")
    return df


def unique_names(names: Sequence[str], paths: Sequence[StrPath], root: Path) -> list[str]:
    """What to call each model: its name, or its path in the models folder where names repeat
    (both resolve back to the model with :func:`resolve_model`)."""
    counts = Counter(names)
    return [
        name if counts[name] == 1 else Path(path).relative_to(root).as_posix()
        for name, path in zip(names, paths, strict=True)
    ]


def _candidates(models: list[LocalModel], root: Path) -> list[str]:
    return unique_names([m.name for m in models], [m.path for m in models], root)


def _unique(matches: list[LocalModel], name: str, root: Path) -> LocalModel:
    if len(matches) > 1:
        candidates = _candidates(matches, root)
        raise AmbiguousError(
            f"{name!r} matches {len(matches)} local models: {', '.join(candidates)}",
            candidates=candidates,
            hint="use a longer part of the name, or the full path",
        )
    return matches[0]


def find_model(name: str, models_dir: StrPath | None = None) -> LocalModel:
    """The library model ``name`` refers to (see :func:`resolve_model` for the rules).

    Raises:
        InvalidArgumentError: ``name`` is empty.
        AmbiguousError: several models match; ``candidates`` lists them.
        NotFoundError: no model in the folder matches.
    """
    if not isinstance(name, str | os.PathLike) or not str(name).strip():
        raise InvalidArgumentError(f"Invalid model name: {name!r}")
    root = _root(models_dir)
    models = scan(root)
    text = str(name).strip()
    path = Path(text).expanduser()
    is_file = path.is_file()
    by_path = [m for m in models if is_file and any(path.samefile(f) for f in m.files)]
    relative = [
        m for m in models if any(text in (f.name, f.relative_to(root).as_posix()) for f in m.files)
    ]
    exact = [m for m in models if m.name == text]
    needle = text.lower()
    partial = [m for m in models if needle in m.path.relative_to(root).as_posix().lower()]
    for matches in (by_path, relative, exact, partial):
        if matches:
            return _unique(matches, text, root)
    available = ", ".join(_candidates(models, root)[:10]) or "none yet"
    raise NotFoundError(
        f"No local model matches {text!r} in {root} (available: {available})",
        hint="see `offgrid list`, or get a model with `offgrid download-hf <repo>`",
    )


def resolve_model(name: StrPath, models_dir: StrPath | None = None) -> Path:
    """The GGUF file to load for ``name``.

    Tried in order: an existing ``.gguf`` file path (anywhere); a file name or path in the
    models folder; a model name (the file name without ``.gguf`` and shard suffix); a unique
    case-insensitive part of a model's path in the folder (``"qwen"``, ``"bartowski/"``).

    Args:
        name: what the user typed.
        models_dir: the folder (default: the configured models folder).

    Returns:
        The file to load (shard 1 of a split model).

    Raises:
        AmbiguousError: several models match; ``candidates`` lists them.
        NotFoundError: nothing matches; the message lists the available models.
    """
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path
    return find_model(str(name), models_dir).path


def remove_model(name: StrPath, models_dir: StrPath | None = None) -> list[Path]:
    """Delete a model from the models folder: all its shards, its manifest and work files.

    Args:
        name: as for :func:`resolve_model`, but only models inside the folder can be removed.
        models_dir: the folder (default: the configured models folder).

    Returns:
        The paths deleted.

    Raises:
        AlreadyDownloadingError: the model is being downloaded right now.
        AmbiguousError, NotFoundError: as :func:`resolve_model`.
    """
    root = _root(models_dir)
    model = find_model(str(name), root)
    removed = []
    with model_lock(model.path, timeout=0):
        for file in model.files:
            for suffix in ("", MANIFEST_SUFFIX, PART_SUFFIX, SIDECAR_SUFFIX):
                path = file.with_name(file.name + suffix)
                if path.exists():
                    path.unlink()
                    removed.append(path)
    with contextlib.suppress(OSError):  # after the release: Windows cannot delete an open file
        model.path.with_name(model.path.name + LOCK_SUFFIX).unlink()
    _prune(model.path.parent, root)
    return removed


def _prune(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    root = root.resolve()
    folder = folder.resolve()
    while folder != root and folder.is_relative_to(root) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def verify_model(name: StrPath, models_dir: StrPath | None = None) -> bool:
    """Re-hash every shard of a model and compare with the sha256 its manifest records.

    Args:
        name: as for :func:`resolve_model`.
        models_dir: the folder (default: the configured models folder).

    Returns:
        ``True`` when every shard matches; ``False`` when the model has no recorded checksums
        (copied in by hand), so there is nothing to compare with.

    Raises:
        ChecksumMismatchError: a shard's bytes differ from the recorded sha256 (names the file).
        AmbiguousError, NotFoundError: as :func:`resolve_model`.
    """
    model = find_model(str(name), models_dir)
    if model.manifest is None:
        return False
    for file in model.files:
        expected = model.manifest.sha256_of(file)
        if expected is None:
            return False
        actual = hash_file(file).hexdigest()
        if actual != expected:
            raise ChecksumMismatchError(
                f"{file} is corrupt: its sha256 is {actual}, the manifest records {expected}",
                hint="remove the model and download it again",
            )
    return True


__all__ = [
    "LocalModel",
    "Manifest",
    "ManifestFile",
    "find_model",
    "hash_file",
    "list_models",
    "manifest_path",
    "model_lock",
    "remove_model",
    "resolve_model",
    "scan",
    "verify_model",
]
