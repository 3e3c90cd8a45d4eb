"""One exception hierarchy for every front end.

Each error carries a one-line ``message`` (what happened) and an optional ``hint`` (what to do).
The CLI prints ``error: <message>`` plus the hint and exits non-zero; the server maps
``http_status`` to a JSON error; widgets show the text in the panel.
"""

from __future__ import annotations


class OffgridError(Exception):
    """Base class of every error offgrid_nb raises on purpose."""

    http_status: int = 400

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidArgumentError(OffgridError, ValueError):
    """An argument or option has a value we cannot use."""


class NotFoundError(OffgridError, LookupError):
    """A repository, file or local model does not exist."""

    http_status = 404


class AmbiguousError(OffgridError, LookupError):
    """A name matches several things; ``candidates`` lists them."""

    http_status = 409

    def __init__(self, message: str, *, candidates: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.candidates = candidates


class GatedRepoError(OffgridError, PermissionError):
    """The repository is gated or private and we have no access."""

    http_status = 403


class OfflineError(OffgridError, ConnectionError):
    """Offline mode is on (``HF_HUB_OFFLINE=1``) and the call needs the Hub."""

    http_status = 503


class HubUnavailableError(OffgridError, ConnectionError):
    """The Hub could not be reached, timed out, or kept failing with 5xx."""

    http_status = 502


class DownloadError(OffgridError, ConnectionError):
    """A download kept failing after bounded retries; its partial file is kept for resuming."""

    http_status = 502


class ChecksumMismatchError(OffgridError):
    """A file's bytes do not hash to the sha256 the Hub (or the model's manifest) lists."""

    http_status = 502


class DiskSpaceError(OffgridError, OSError):
    """Not enough free disk space for a download; the message names needed and free sizes."""

    http_status = 507


class AlreadyDownloadingError(OffgridError):
    """Another process or thread is downloading the same file right now."""

    http_status = 409


class DownloadCancelledError(OffgridError):
    """A download was cancelled on request; its partial file is kept for resuming."""

    http_status = 409


class UnsafePathError(InvalidArgumentError):
    """A remote file name would land outside the models folder (absolute, ``..``, backslash)."""


class InsufficientMemoryError(OffgridError, MemoryError):
    """The model would not fit in available memory at the asked context."""

    http_status = 507


class ReadOnlySourceError(OffgridError, PermissionError):
    """The model belongs to another tool (HF cache, Ollama, LM Studio...): we never delete it."""

    http_status = 409


class GenerationError(OffgridError):
    """llama.cpp failed while generating (a decode error)."""

    http_status = 500


class ModelLoadError(OffgridError):
    """llama.cpp refused to load a model that passed our header checks."""

    http_status = 422


class ContextOverflowError(InvalidArgumentError):
    """The input does not fit in the model's context window."""


class InvalidModelError(OffgridError):
    """A file is not a GGUF model, or is truncated, corrupt or hostile (checked before loading)."""

    http_status = 422


class UnsupportedModelError(OffgridError):
    """A valid GGUF file lacks what an operation needs (e.g. memory estimate of an unknown arch)."""

    http_status = 422


class ClusterError(OffgridError):
    """A Dask cluster cannot run the job: no client, no worker with the resource, other versions."""

    http_status = 503


class ServerBusyError(OffgridError):
    """The server already has as much work running and queued as it allows, or a request
    waited too long for its turn (HTTP 503); ``retry_after``: seconds to wait before trying
    again (the servers send it as ``Retry-After``)."""

    http_status = 503

    def __init__(self, message: str, *, hint: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class RunCancelledError(OffgridError):
    """A long run (perplexity, quality) was cancelled on request."""

    http_status = 409
