"""The models on this machine: list, resolve, verify and remove them, across model sources.

Our own folder (``offgrid``) holds downloads at ``<models_dir>/<org>/<repo>/<path in repo>``,
each with a manifest (:mod:`offgrid_nb.manifest`) beside its first file; GGUF files copied in
by hand are models too. The other sources (:mod:`offgrid_nb.sources`: the HF cache, LM Studio,
Ollama, llama.cpp's cache, extra folders) are used in place and never changed. Work files
(``.part``, ``.part.json``, ``.lock``) and split models with missing shards are not models.

**Names.** A model is called by its name in its source (the file name without ``.gguf`` and
shard suffix; Ollama's ``llama3.2:1b``). When several models share a name, the one in our
folder keeps it and the others get their source as a prefix, ``<source>:<name>``
(``hf-cache:Qwen2.5-0.5B-Instruct-Q4_K_M``, ``ollama:llama3.2:1b``); if that still repeats,
``<source>:<key>`` (the path in the source's folder; for our folder, the path alone). The
prefixed form always works, colliding or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd
from filelock import FileLock
from filelock import Timeout as LockTimeout

from . import names
from .config import SOURCE_IDS, get_settings
from .errors import (
    AlreadyDownloadingError,
    AmbiguousError,
    ChecksumMismatchError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlySourceError,
)
from .manifest import MANIFEST_SUFFIX, Manifest, ManifestFile, manifest_path
from .refs import HubModel, parse_hub_ref
from .sources import OFFGRID, LocalModel, ModelSource, enabled_sources, model_name

PART_SUFFIX = ".part"  # bytes of a download in progress
SIDECAR_SUFFIX = ".part.json"  # what those bytes are (see offgrid_nb.download)
LOCK_SUFFIX = ".lock"
HASH_BLOCK = 1 << 20  # bytes read at a time when hashing a file
LOCK_POLL = 0.2  # seconds between checks for a cancel while waiting for a lock
OLLAMA_BLOB = re.compile(r"sha256-[0-9a-f]{64}")  # a GGUF in Ollama's store has no suffix
StrPath = str | os.PathLike[str]
COLUMNS = [
    "name", "source", "path", "size", "quant", "param_size", "repo_id", "sha256",
    "downloaded_at", "n_shards",
]  # fmt: skip


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


def _sources(root: Path) -> list[ModelSource]:
    return enabled_sources(get_settings(), root)


_SOURCE_ORDER = {source: i for i, source in enumerate(SOURCE_IDS)}


def _unique_names(models: list[LocalModel]) -> list[str]:
    """Each model's name in the listing (the rule is in the module's docstring)."""
    everywhere = Counter(m.name for m in models)
    ours = Counter(m.name for m in models if m.source == OFFGRID)
    per_source = Counter((m.source, m.name) for m in models)
    unique = []
    for m in models:
        if everywhere[m.name] == 1:
            unique.append(m.name)
        elif m.source == OFFGRID:
            unique.append(m.name if ours[m.name] == 1 else m.key)
        else:
            unique.append(f"{m.source}:{m.name if per_source[m.source, m.name] == 1 else m.key}")
    return unique


def scan(models_dir: StrPath | None = None) -> list[LocalModel]:
    """Every complete model in the enabled sources, under names unique across them.

    Args:
        models_dir: our models folder (default: the configured one); the other sources come
            from the settings (:mod:`offgrid_nb.config`).

    Returns:
        One :class:`LocalModel` per single-file model and per split model with all its shards,
        by name, our folder first among equal names. A file that two sources reach (a folder
        listed twice) is listed once, under the first; within a source every name stays (Ollama
        tags of one blob).
    """
    found = [m for source in _sources(_root(models_dir)) for m in source.models()]
    found.sort(key=lambda m: (_SOURCE_ORDER[m.source], m.name.lower(), str(m.path)))
    owner: dict[Path, str] = {}
    distinct = []
    for model in found:
        real = model.path.resolve()
        if owner.setdefault(real, model.source) == model.source:
            distinct.append(model)
    distinct.sort(key=lambda m: (m.name.lower(), _SOURCE_ORDER[m.source], str(m.path)))
    return [replace(m, name=n) for m, n in zip(distinct, _unique_names(distinct), strict=True)]


def _row(model: LocalModel) -> dict[str, Any]:
    manifest = model.manifest
    return {
        "name": model.name,
        "source": model.source,
        "path": str(model.path),
        "size": sum(p.stat().st_size for p in model.files),
        "quant": model.quant,
        "param_size": model.param_size,
        "repo_id": model.repo_id,
        "sha256": manifest.sha256_of(model.path) if manifest else None,
        "downloaded_at": manifest.downloaded_at if manifest else None,
        "n_shards": len(model.files),
    }


def list_models(models_dir: StrPath | None = None) -> pd.DataFrame:
    """The models on this machine, one row each, by name, from every enabled source.

    Args:
        models_dir: our models folder (default: ``OFFGRID_MODELS_DIR``, else the platform data
            dir); the other sources come from the settings (``OFFGRID_SOURCES``...).

    Returns:
        DataFrame with columns ``name, source, path, size, quant, param_size, repo_id, sha256,
        downloaded_at, n_shards``: ``name`` resolves back to the model (:func:`find_model`),
        ``source`` is ``offgrid``, ``hf-cache``, ``lmstudio``, ``ollama``, ``llama.cpp`` or
        ``folder``; ``size`` covers all shards; ``sha256`` and ``downloaded_at`` (UTC) come
        from our manifests, so only models we downloaded have them.
    """
    df = pd.DataFrame([_row(m) for m in scan(models_dir)], columns=COLUMNS)
    df["downloaded_at"] = pd.to_datetime(df["downloaded_at"], utc=True, format="ISO8601")
    return df


def _split_source(text: str) -> tuple[str | None, str]:
    """``("ollama", "llama3.2:1b")`` for ``"ollama:llama3.2:1b"``; ``(None, text)`` without a
    source prefix."""
    for source in SOURCE_IDS:
        if text.startswith(f"{source}:"):
            return source, text[len(source) + 1 :]
    return None, text


def _repo_path(model: LocalModel, file: Path) -> str | None:
    """Where a model's file is in its Hub repo, when the source keeps the repo's layout."""
    if model.repo_id is None or not model.key.startswith(f"{model.repo_id}/"):
        return None
    return PurePosixPath(model.key).with_name(file.name).as_posix()[len(model.repo_id) + 1 :]


def _relative_names(model: LocalModel) -> set[str]:
    """The file names and in-source paths of every shard."""
    return {f.name for f in model.files} | {
        PurePosixPath(model.key).with_name(f.name).as_posix() for f in model.files
    }


def _by_hub_ref(models: list[LocalModel], ref: HubModel) -> list[LocalModel]:
    """The local copy of the Hub variant ``ref`` names: by repo and quant (or file); for a repo
    alone its best-ranked local variant. Our folder first when several sources have it."""
    matches = [
        m
        for m in models
        if m.repo_id is not None
        and m.repo_id.lower() == ref.repo_id.lower()
        and (ref.file is None or ref.file in {_repo_path(m, f) for f in m.files})
        and (ref.quant is None or names.quant_matches(m.quant, ref.quant))
    ]
    ranked = sorted(matches, key=lambda m: (names.quant_rank(m.quant), _SOURCE_ORDER[m.source]))
    return ranked[:1]


def _by_path(models: list[LocalModel], text: str) -> list[LocalModel]:
    path = Path(text).expanduser()
    if not path.is_file():
        return []
    return [m for m in models if any(path.samefile(f) for f in m.files)]


def _unique(matches: list[LocalModel], name: str) -> LocalModel:
    if len(matches) > 1:
        candidates = [m.name for m in matches]
        raise AmbiguousError(
            f"{name!r} matches {len(matches)} local models: {', '.join(candidates)}",
            candidates=candidates,
            hint="use a longer part of the name, or the full path",
        )
    return matches[0]


def find_model(name: str, models_dir: StrPath | None = None) -> LocalModel:
    """The local model ``name`` refers to, in any enabled source.

    Tried in order, the first that matches wins: a path to one of its files; its name as
    :func:`list_models` shows it (``ollama:`` / ``hf-cache:``... prefix optional when the rest
    is unique); a file name or a path in its source's folder; a Hub reference,
    ``owner/repo:QUANT``, ``owner/repo/file.gguf`` or ``owner/repo`` (its best-ranked local
    variant), each optionally after ``hf.co/``, matched by the repo and quant that our
    manifests, the HF cache and LM Studio's layout record; its name before disambiguation;
    a unique case-insensitive part of its path in its source (``"qwen"``, ``"bartowski/"``).
    A ``<source>:`` prefix limits all but the first to that source.

    Raises:
        InvalidArgumentError: ``name`` is empty.
        AmbiguousError: several models match; ``candidates`` lists their names.
        NotFoundError: nothing matches; the message lists the available models.
    """
    if not isinstance(name, str | os.PathLike) or not str(name).strip():
        raise InvalidArgumentError(f"Invalid model name: {name!r}")
    models = scan(models_dir)
    text = str(name).strip()
    source, rest = _split_source(text)
    pool = [m for m in models if source in (None, m.source)]
    ref = parse_hub_ref(rest)
    needle = rest.lower()
    steps: tuple[Callable[[], list[LocalModel]], ...] = (
        lambda: _by_path(models, text),
        lambda: (
            [m for m in models if m.name == text]
            or [m for m in pool if m.name.removeprefix(f"{m.source}:") == rest]
        ),
        lambda: [m for m in pool if rest in _relative_names(m)],
        lambda: _by_hub_ref(pool, ref) if ref else [],
        lambda: [m for m in pool if model_name(m.path) == rest],
        lambda: [m for m in pool if needle in m.key.lower()],
    )
    for step in steps:
        matches = step()
        if matches:
            return _unique(matches, text)
    available = ", ".join(m.name for m in models[:10]) or "none yet"
    hint = "see `offgrid list`, or get a model with `offgrid download-hf <repo>`"
    if ref is not None:
        hint = f"`offgrid run {ref}` and og.Chat({str(ref)!r}) download it first"
    raise NotFoundError(f"No local model matches {text!r} (available: {available})", hint=hint)


def resolve_model(name: StrPath, models_dir: StrPath | None = None) -> Path:
    """The GGUF file to load for ``name``.

    An existing ``.gguf`` file (or Ollama blob) path is used as it is, anywhere; anything else
    as :func:`find_model` resolves it.

    Args:
        name: what the user typed.
        models_dir: our models folder (default: the configured one).

    Returns:
        The file to load (shard 1 of a split model).

    Raises:
        AmbiguousError: several models match; ``candidates`` lists them.
        NotFoundError: nothing matches; the message lists the available models.
    """
    path = Path(name).expanduser()
    is_model_path = path.suffix.lower() == ".gguf" or OLLAMA_BLOB.fullmatch(path.name)
    if is_model_path and path.is_file():
        return path
    return find_model(str(name), models_dir).path


def model_label(name: StrPath, path: Path) -> str:
    """What to call the model ``name`` resolved to: the file name of ``path`` (as resolved,
    before links are followed) without ``.gguf``; for an Ollama blob, named by its hash, the
    name given."""
    if OLLAMA_BLOB.fullmatch(path.name) and Path(name).expanduser() != path:
        return str(name)
    return path.name.removesuffix(".gguf")


def remove_model(name: StrPath, models_dir: StrPath | None = None) -> list[Path]:
    """Delete a model from our models folder: all its shards, its manifest and work files.

    Args:
        name: as for :func:`find_model`; only models of our own folder can be removed.
        models_dir: our models folder (default: the configured one).

    Returns:
        The paths deleted.

    Raises:
        ReadOnlySourceError: the model belongs to another tool; the hint says how to delete it
            there (``hf cache rm``, ``ollama rm``...).
        AlreadyDownloadingError: the model is being downloaded right now.
        AmbiguousError, NotFoundError: as :func:`find_model`.
    """
    root = _root(models_dir)
    model = find_model(str(name), root)
    if model.source != OFFGRID:
        owner = next(s for s in _sources(root) if s.id == model.source)
        raise ReadOnlySourceError(
            f"{model.name} is {model.source}'s ({model.path}); offgrid never deletes it",
            hint=owner.removal_hint(model),
        )
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
    """Re-hash every shard of a model and compare with the sha256 our manifest records.

    Args:
        name: as for :func:`resolve_model`.
        models_dir: the folder (default: the configured models folder).

    Returns:
        ``True`` when every shard matches; ``False`` when the model has no recorded checksums
        (copied in by hand, or another source's), so there is nothing to compare with.

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
    "COLUMNS",
    "MANIFEST_SUFFIX",
    "LocalModel",
    "Manifest",
    "ManifestFile",
    "find_model",
    "hash_file",
    "list_models",
    "manifest_path",
    "model_label",
    "model_lock",
    "remove_model",
    "resolve_model",
    "scan",
    "verify_model",
]
