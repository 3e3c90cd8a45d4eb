"""Texts to measure perplexity on: a string, a file, a Hub dataset, or a sample that ships
with Python.

- ``dataset="wikitext-2"``: the raw test split (``wiki.test.raw``) that llama.cpp's own
  perplexity tables use, fetched as a Hub *dataset* repo through ``huggingface_hub`` (so it is
  cached, and works through our mirror or offline once cached).
- Without a text or dataset: Python's own ``pydoc_data.topics`` (the language reference's
  help topics, ~600 kB of English prose and code): good for ratios and KL-divergence between
  variants of one model, not for comparing with published perplexity tables.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .config import get_settings
from .errors import InvalidArgumentError, NotFoundError, OfflineError
from .hub import hub_errors


@dataclass(frozen=True)
class Dataset:
    """A text inside a file of a Hub dataset repo (a zip member, or the file itself)."""

    repo_id: str
    filename: str
    member: str | None = None


DATASETS = {
    "wikitext-2": Dataset("ggml-org/ci", "wikitext-2-raw-v1.zip", "wikitext-2-raw/wiki.test.raw"),
}


class LiteralText(str):
    """A text given as it is (e.g. in a REST request): never read as a file name."""


def check_dataset(name: str) -> Dataset:
    """The known dataset ``name``.

    Raises:
        NotFoundError: an unknown name.
    """
    dataset = DATASETS.get(name) if isinstance(name, str) else None
    if dataset is None:
        raise NotFoundError(
            f"Unknown dataset {name!r}", hint=f"known datasets: {', '.join(sorted(DATASETS))}"
        )
    return dataset


def check_source(text: str | os.PathLike[str] | None, dataset: str | None) -> None:
    """What :func:`resolve_text` refuses without reading anything: both given, an unknown
    dataset, an empty literal text.

    Raises:
        InvalidArgumentError: both given, or an empty :class:`LiteralText`.
        NotFoundError: an unknown dataset.
    """
    if text is not None and dataset is not None:
        raise InvalidArgumentError("Give a text or a dataset, not both")
    if dataset is not None:
        check_dataset(dataset)
    if isinstance(text, LiteralText) and not text.strip():
        raise InvalidArgumentError("The text (text) is empty")


def sample_text() -> str:
    """The default text: every help topic of ``pydoc_data.topics``, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def dataset_text(name: str) -> str:
    """The text of a known dataset, downloaded once into the Hugging Face cache.

    Raises:
        NotFoundError: an unknown name, or the Hub (or mirror) has no such dataset file.
        OfflineError, HubUnavailableError: as the Hub answers.
    """
    dataset = check_dataset(name)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    settings = get_settings()
    try:
        with hub_errors(settings, f"dataset {dataset.repo_id}"):
            path = hf_hub_download(
                dataset.repo_id,
                dataset.filename,
                repo_type="dataset",
                cache_dir=settings.hf_cache_dir,
                endpoint=settings.endpoint,
                token=settings.token,
            )
    except EntryNotFoundError as exc:
        raise NotFoundError(
            f"Dataset {dataset.repo_id} has no file {dataset.filename}",
            hint="check the Hub endpoint (HF_ENDPOINT) serves this dataset",
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise OfflineError(
            f"Dataset {name} is not cached and the Hub cannot be reached",
            hint="go online once (or point HF_ENDPOINT at a mirror that has it)",
        ) from exc
    if dataset.member is None:
        return Path(path).read_text(encoding="utf-8")
    with zipfile.ZipFile(path) as archive, archive.open(dataset.member) as member:
        return io.TextIOWrapper(member, encoding="utf-8").read()


def resolve_text(text: str | os.PathLike[str] | None, dataset: str | None) -> tuple[str, str]:
    """``(text, where it came from)`` for ``text`` (a string or a path) or ``dataset``.

    A ``str`` that names an existing file is read as that file (never a :class:`LiteralText`);
    a ``Path`` must exist.

    Raises:
        InvalidArgumentError: both given, or an empty text.
        NotFoundError: a ``Path`` that does not exist, or an unknown dataset.
    """
    check_source(text, dataset)
    if dataset is not None:
        found, source = dataset_text(dataset), dataset
    elif text is None:
        found, source = sample_text(), "pydoc_data.topics"
    elif isinstance(text, os.PathLike) or (
        not isinstance(text, LiteralText)
        and len(text) < 4096
        and "\n" not in text
        and _is_file(text)
    ):
        path = Path(text)
        if not path.is_file():
            raise NotFoundError(f"No such text file: {path}")
        found, source = path.read_text(encoding="utf-8", errors="replace"), str(path)
    else:
        found, source = text, "text"
    if not found.strip():
        raise InvalidArgumentError(f"The text ({source}) is empty")
    return found, source


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except OSError:  # a name too long for the file system is a text
        return False
