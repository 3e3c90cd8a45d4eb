"""Benchmark models across a fleet of machines with Dask distributed (extra ``[cluster]``).

Dask does the scheduling; this module only says what runs where:

- every task holds one unit of a worker resource (``resources={"bench": 1}``; workers started
  with ``--resources "bench=1"``), so a worker runs one benchmark at a time, and is submitted
  with ``pure=False``: the same model twice is two runs;
- a task first downloads its model on its worker (:func:`offgrid_nb.download.download`: resumable,
  verified; a model already there is not fetched again), timed apart from the benchmark, under a
  :class:`distributed.Lock` per file (file locks are unreliable on NFS);
- a failing model becomes a row with its ``error``; the other tasks still run;
- cancelling sets a :class:`distributed.Event` that tasks check before they start (Dask cannot
  stop a running task);
- with ``quality=True`` a task also measures the model's perplexity (and KL-divergence against
  a reference it downloads too) with :func:`offgrid_nb.quality.quality`, after the benchmark:
  the quality columns repeat on each of that task's rows.

``distributed`` is imported inside the functions that need it: ``import offgrid_nb`` (and this
module) never imports it.
"""

from __future__ import annotations

import inspect
import math
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from . import bench
from .config import get_settings, settings_override
from .corpus import LiteralText, check_source, resolve_text
from .download import download, local_path, select_variant
from .errors import ClusterError, InvalidArgumentError, NotFoundError, OffgridError, OfflineError
from .library import find_model
from .perplexity import check_options as check_chunking
from .quality import QUALITY_COLUMNS
from .quality import quality as measure_quality
from .refs import HubModel, parse_hub_ref, strip_hub_prefix

if TYPE_CHECKING:
    from types import ModuleType

    from distributed import Client, Future

Per = Literal["spread", "worker", "host"]
PER_CHOICES = ("spread", "worker", "host")
FLEET_COLUMNS = ["host", "worker", "download_s", "error", "task_start", "task_end"]
PACKAGES = ("offgrid-nb", "llama-cpp-python")  # must match between the client and the workers
POLL_INTERVAL = 0.02  # seconds between checks for finished tasks and for a cancel
WORKER_CHECK_INTERVAL = 1.0  # seconds between checks that the workers tasks wait for still exist
# what a fleet row gets from a quality table (model and quant are the benchmark's already)
FLEET_QUALITY_COLUMNS = [c for c in QUALITY_COLUMNS if c not in ("model", "quant", "reference")]
QUALITY_OPTIONS = ("reference", "text", "dataset", "n_ctx", "chunks", "batch_size", "top_k",
                   "tail_samples")  # fmt: skip


@dataclass(frozen=True)
class FleetProgress:
    """One finished task: ``done`` of ``total``; ``rows`` are its rows (``error`` and all)."""

    done: int
    total: int
    model: str
    rows: pd.DataFrame = field(repr=False)

    @property
    def error(self) -> str | None:
        """Why the task has no figures, ``None`` when it has them."""
        error = self.rows["error"].iloc[0]
        return None if pd.isna(error) else str(error)


ProgressCallback = Callable[[FleetProgress], None]


def hub_model(spec: str | os.PathLike[str] | HubModel) -> HubModel:
    """What a model given to :func:`fleet_benchmark` means.

    Args:
        spec: ``owner/name``, ``owner/name:QUANT``, ``owner/name/path/in/repo.gguf`` (each
            optionally after ``hf.co/``), or a local model (name or path) downloaded from the
            Hub, which stands for its Hub file.

    Raises:
        InvalidArgumentError: neither a Hub reference nor a local model with a manifest.
        AmbiguousError: a local name matches several models.
    """
    if isinstance(spec, HubModel):
        return spec
    text = strip_hub_prefix(str(spec).strip())
    ref = None if Path(text).expanduser().is_file() else parse_hub_ref(text)
    if ref is not None:
        return ref
    try:
        local = find_model(text)
    except (NotFoundError, InvalidArgumentError) as exc:
        raise InvalidArgumentError(
            f"{text!r} is neither a Hub model nor a local one",
            hint="name it as owner/name, owner/name:QUANT or owner/name/file.gguf",
        ) from exc
    if local.manifest is None:
        raise InvalidArgumentError(
            f"{local.name} was not downloaded from the Hub (no manifest): workers cannot fetch it",
            hint="benchmark it here with og.benchmark, or name its Hub repo and file",
        )
    revision = local.manifest.revision
    return HubModel(
        local.manifest.repo_id,
        local.manifest.filename,
        revision=None if revision == "main" else revision,
    )


# --- on a worker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """What one task needs, sent to its worker (settings explicitly, not by environment)."""

    model: HubModel
    endpoint: str
    token: str | None
    models_dir: str | None  # None: the worker's own models folder
    options: dict[str, Any]
    cancel_event: str
    quality: dict[str, Any] | None = None  # options for quality(); None: no quality measured


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _fetch(task: _Task, model: HubModel) -> Path:
    """Download ``model`` on this worker (once per models folder), under a Dask lock."""
    from distributed import Lock

    root = Path(task.models_dir).expanduser() if task.models_dir else get_settings().models_dir
    try:
        variant = select_variant(
            model.repo_id, model.file, quant=model.quant, revision=model.revision
        )
    except OfflineError:  # only a model the local manifests already hold; nothing to lock
        return download(
            model.repo_id, model.file, quant=model.quant, models_dir=root, revision=model.revision
        )
    target = local_path(root, model.repo_id, variant.filename)
    # A folder given by the user is shared by every worker; a worker's own is shared at most
    # by the workers of its host.
    scope = "shared" if task.models_dir else platform.node()
    with Lock(f"offgrid-download:{scope}:{target}"):
        return download(model.repo_id, variant.filename, models_dir=root, revision=model.revision)


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, OffgridError) else f"{type(exc).__name__}: {exc}"


def _error_row(model: str, error: str, **where: Any) -> pd.DataFrame:
    """One row for a model that has no figures: a failure, a lost worker, a cancel."""
    row = {"model": model, "quant": None, **{c: math.nan for c in bench.RUN_COLUMNS}}
    row.update({"download_s": math.nan, "error": error, **where})
    return pd.DataFrame([row])


def _quality_row(task: _Task, path: Path) -> dict[str, Any]:
    """The quality columns of the task's model: against its reference (downloaded here too),
    or, without one, its perplexity alone (KLD 0: it is its own reference)."""
    options = dict(task.quality or {})
    reference = options.pop("reference", None)
    models = [path] if reference is None else [path, _fetch(task, reference)]
    table = measure_quality(
        models, reference=models[-1], speed=False,
        n_threads=task.options.get("n_threads"), **options,
    )  # fmt: skip
    measured = table.iloc[0] if reference is None else table[~table["reference"]].iloc[0]
    row = {column: measured[column] for column in FLEET_QUALITY_COLUMNS}
    row["quality_reference"] = table[table["reference"]].iloc[0]["model"]
    return row


def run_task(task: _Task) -> pd.DataFrame:
    """Download and benchmark one model on this worker (the function Dask runs); with
    ``task.quality``, measure its quality too.

    Returns:
        The benchmark's rows plus ``host``, ``worker``, ``download_s``, ``error`` (``None``),
        ``task_start`` and ``task_end`` (and :data:`FLEET_QUALITY_COLUMNS` with
        ``quality_reference``); a single error row when anything fails.
    """
    from distributed import Event, get_worker

    where = {"host": platform.node(), "worker": get_worker().address, "task_start": _now()}
    if Event(task.cancel_event).is_set():
        return _error_row(str(task.model), "cancelled before it started", **where, task_end=_now())
    try:  # the override is process-wide: fine, a worker runs one benchmark at a time
        with settings_override(endpoint=task.endpoint, token=task.token):
            started = time.perf_counter()
            path = _fetch(task, task.model)
            download_s = time.perf_counter() - started
            frame = bench.benchmark(path, **task.options).to_frame()
            measured = {} if task.quality is None else _quality_row(task, path)
    except Exception as exc:  # a broken model is a row; the other models still run
        return _error_row(str(task.model), _error_text(exc), **where, task_end=_now())
    frame["download_s"] = download_s
    frame["error"] = None
    return frame.assign(**measured, **where, task_end=_now())


# --- on the client ---------------------------------------------------------------------------


def _distributed() -> ModuleType:
    try:
        import distributed
    except ImportError:
        raise ClusterError(
            "Benchmarking on a cluster needs Dask distributed",
            hint="pip install 'offgrid-nb[cluster]'",
        ) from None
    return distributed


def current_client() -> Client:
    """The Dask client of this process (``distributed.get_client()``), or a clear error.

    Raises:
        ClusterError: ``distributed`` is not installed, or no client was created.
    """
    _distributed()
    client = existing_client()
    if client is None:
        raise ClusterError(
            "No Dask client: connect to a cluster first",
            hint="client = distributed.Client('tcp://HOST:8786'), or a LocalCluster, "
            "dask-jobqueue or dask-gateway cluster",
        )
    return client


def existing_client() -> Client | None:
    """The current Dask client if there is one; never imports ``distributed`` (a process that
    has not imported it has no client)."""
    if "distributed" not in sys.modules:
        return None
    try:
        return sys.modules["distributed"].get_client()
    except ValueError:
        return None


def connect(address: str, *, timeout: float = 10.0) -> Client:
    """A client of the Dask scheduler at ``address`` (``tcp://HOST:8786``).

    Raises:
        ClusterError: ``distributed`` is missing, or the scheduler cannot be reached.
    """
    distributed = _distributed()
    try:
        return distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(
            f"Cannot reach the Dask scheduler at {address}: {exc}",
            hint="start one with `dask scheduler`, and workers with "
            '`dask worker tcp://HOST:8786 --nthreads 1 --resources "bench=1"`',
        ) from None


def bench_workers(client: Client, resource: str = "bench") -> list[str]:
    """The addresses of the workers that offer ``resource`` (sorted).

    Raises:
        ClusterError: no worker has it (the hint says how to start one that does).
    """
    workers = client.scheduler_info(n_workers=-1)["workers"]
    found = sorted(a for a, w in workers.items() if w.get("resources", {}).get(resource, 0) >= 1)
    if not found:
        raise ClusterError(
            f"None of the cluster's {len(workers)} workers has the resource {resource!r}",
            hint=f'start workers with --resources "{resource}=1" (one benchmark at a time each)',
        )
    return found


def version_differences(versions: dict[str, Any], workers: Sequence[str]) -> list[str]:
    """Where ``workers`` run other offgrid-nb or llama-cpp-python versions than the client.

    Args:
        versions: what :meth:`distributed.Client.get_versions` returns.
        workers: the worker addresses to check.

    Returns:
        One ``"<worker>: <package> <theirs> (client: <ours>)"`` per difference.
    """
    ours = versions["client"]["packages"]
    found = []
    for address in workers:
        theirs = versions["workers"].get(address, {}).get("packages", {})
        for package in PACKAGES:
            if theirs.get(package) != ours.get(package):
                found.append(
                    f"{address}: {package} {theirs.get(package) or 'missing'} "
                    f"(client: {ours.get(package) or 'missing'})"
                )
    return found


def _targets(client: Client, workers: list[str], per: str) -> list[str | None]:
    """The worker each copy of a model runs on (``None``: wherever the scheduler likes)."""
    if per == "spread":
        return [None]
    if per == "worker":
        return list(workers)
    hostnames = client.run(platform.node, workers=workers)
    chosen: dict[str, str] = {}
    for address in workers:
        chosen.setdefault(hostnames[address], address)
    return list(chosen.values())


def _check_options(options: dict[str, Any]) -> None:
    try:
        bench.benchmark_config(**options)
    except TypeError:
        known = inspect.signature(bench.benchmark_config).parameters
        unknown = ", ".join(sorted(set(options) - set(known)))
        raise InvalidArgumentError(
            f"Unknown benchmark options: {unknown}", hint=f"use: {', '.join(known)}"
        ) from None


def _quality_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """``quality_options`` checked on the client, ready to send: a text (or text file) read
    here, the reference as a Hub model.

    Raises:
        InvalidArgumentError: unknown options, bad chunking, both text and dataset.
        NotFoundError: an unknown dataset, a missing text file.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(QUALITY_OPTIONS))
    if unknown:
        raise InvalidArgumentError(
            f"Unknown quality options: {', '.join(unknown)}",
            hint=f"use: {', '.join(QUALITY_OPTIONS)}",
        )
    check_chunking(options.get("n_ctx", 512), options.get("chunks"), options.get("batch_size"))
    check_source(options.get("text"), options.get("dataset"))
    if options.get("text") is not None:  # the workers may not have the file
        options["text"] = LiteralText(resolve_text(options["text"], None)[0])
    if options.get("reference") is not None:
        options["reference"] = hub_model(options["reference"])
    return options


def _gone(
    client: Client, pending: dict[int, Future], labels: list[tuple[str, str | None]]
) -> list[int]:
    """The pending tasks tied to a worker that left the cluster (they would wait forever)."""
    alive = set(client.scheduler_info(n_workers=-1)["workers"])
    return [i for i in pending if labels[i][1] is not None and labels[i][1] not in alive]


def _collect(
    client: Client,
    futures: list[Future],
    labels: list[tuple[str, str | None]],
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    cancel_event: Any,
) -> list[pd.DataFrame]:
    """Each task's rows, in submission order; a lost task is an error row."""
    frames: list[pd.DataFrame | None] = [None] * len(futures)
    pending = dict(enumerate(futures))
    cancelled = False
    checked = time.monotonic()

    def finish(index: int, frame: pd.DataFrame) -> None:
        frames[index] = frame
        pending.pop(index)
        if progress is not None:
            done = len(futures) - len(pending)
            progress(FleetProgress(done, len(futures), labels[index][0], frame))

    try:
        while pending:
            for index in [i for i, f in pending.items() if f.done()]:
                model, target = labels[index]
                try:
                    frame = pending[index].result()
                except Exception as exc:  # the worker died too often, or the task could not run
                    frame = _error_row(model, _error_text(exc), host=None, worker=target)
                finish(index, frame)
            if pending and time.monotonic() - checked > WORKER_CHECK_INTERVAL:
                checked = time.monotonic()
                for index in _gone(client, pending, labels):
                    model, target = labels[index]
                    client.cancel(pending[index])
                    error = f"worker {target} left the cluster before this run ended"
                    finish(index, _error_row(model, error, host=None, worker=target))
            if not cancelled and cancel is not None and cancel.is_set():
                cancel_event.set()
                cancelled = True
            if pending:
                time.sleep(POLL_INTERVAL)
    finally:
        if pending and not cancelled:  # interrupted (Ctrl+C): tasks not started skip their model
            cancel_event.set()
    return frames  # type: ignore[return-value]  # every slot is filled


def fleet_benchmark(
    models: Sequence[str | os.PathLike[str] | HubModel],
    client: Client | None = None,
    *,
    per: Per = "spread",
    resource: str = "bench",
    models_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    check_versions: bool = True,
    quality: bool = False,
    quality_options: dict[str, Any] | None = None,
    **benchmark_options: Any,
) -> pd.DataFrame:
    """Benchmark models on the workers of a Dask cluster; one row per model, worker, iteration.

    Args:
        models: Hub models (``owner/name``, ``owner/name:QUANT``, ``owner/name/file.gguf``,
            :class:`HubModel`) or local models downloaded from the Hub (they stand for their
            Hub file). The same model twice is benchmarked twice.
        client: a :class:`distributed.Client` (default: the current one).
        per: ``"spread"``: each model once, over the workers; ``"worker"``: every model on
            every worker; ``"host"``: every model once per machine (one worker per host name).
        resource: the worker resource a benchmark holds (one unit).
        models_dir: a folder every worker shares (default: each worker's own models folder).
        endpoint: the Hub the workers download from (default: this process's, e.g. a mirror).
        token: a Hub token to send to the workers (default: none; they use their own).
        progress: called with a :class:`FleetProgress` as each task finishes.
        cancel: set it to skip the models not started yet (the running ones finish).
        check_versions: refuse workers with other offgrid-nb / llama-cpp-python versions.
        quality: each task also measures its model's quality (:func:`offgrid_nb.quality.quality`).
        quality_options: for that measure: ``reference`` (a Hub model, as ``models``; each
            worker downloads it and reports KLD against it; default: none, perplexity only),
            ``text`` (a string or a file read here) or ``dataset``, ``n_ctx``, ``chunks``,
            ``batch_size``, ``top_k``, ``tail_samples``.
        **benchmark_options: as for :func:`offgrid_nb.bench.benchmark` (``prompt_tokens``...).

    Returns:
        The rows of :meth:`BenchmarkResult.to_frame` plus ``host``, ``worker``, ``download_s``
        (seconds spent getting the model on that worker, 0-ish when it was there), ``error``
        (``None``, or why that model has no figures), ``task_start`` and ``task_end``; with
        ``quality``, :data:`FLEET_QUALITY_COLUMNS` (``ppl``, ``kld``, ``same_top_pct``...) and
        ``quality_reference``.

    Raises:
        ClusterError: ``distributed`` missing, no client, no worker with ``resource``, or
            versions that differ (the message names the workers and packages).
        InvalidArgumentError: no models, a model that is not a Hub model, bad options.
    """
    distributed = _distributed()
    if not models:
        raise InvalidArgumentError("fleet_benchmark() needs at least one model")
    if per not in PER_CHOICES:
        raise InvalidArgumentError(
            f"Invalid per: {per!r}", hint=f"use one of: {', '.join(PER_CHOICES)}"
        )
    _check_options(benchmark_options)
    measure = _quality_options(quality_options) if quality else None
    specs = [hub_model(m) for m in models]
    client = client or current_client()
    workers = bench_workers(client, resource)
    if check_versions:
        differences = version_differences(client.get_versions(packages=list(PACKAGES)), workers)
        if differences:
            raise ClusterError(
                f"Workers run other versions than this client: {'; '.join(differences)}",
                hint="install the same offgrid-nb and llama-cpp-python everywhere, or pass "
                "check_versions=False",
            )
    settings = get_settings(endpoint=endpoint)
    cancel_name = f"offgrid-cancel-{uuid.uuid4().hex}"
    event = distributed.Event(cancel_name, client=client)
    folder = str(Path(models_dir).expanduser()) if models_dir else None
    targets = _targets(client, workers, per)
    futures, labels = [], []
    for spec in specs:
        task = _Task(
            spec, settings.endpoint, token, folder, benchmark_options, cancel_name, measure
        )
        for target in targets:
            key = f"offgrid-benchmark-{spec}-{uuid.uuid4().hex[:8]}"
            futures.append(
                client.submit(
                    run_task,
                    task,
                    key=key,
                    pure=False,
                    resources={resource: 1},
                    workers=target,
                    allow_other_workers=False,
                )
            )
            labels.append((str(spec), target))
    frames = _collect(client, futures, labels, progress, cancel, event)
    return pd.concat(frames, ignore_index=True)


def compare(
    models: list[str | os.PathLike[str]], *, client: Client | None = None, **options: Any
) -> pd.DataFrame:
    """Benchmark several models with the same options; one row per model and iteration.

    Without ``client``, here, one model loaded at a time (:func:`offgrid_nb.bench.compare`);
    with one, on its workers (:func:`fleet_benchmark`, which takes the same options and more).
    """
    if client is None:
        return bench.compare(models, **options)
    return fleet_benchmark(models, client, **options)


__all__ = [
    "FLEET_COLUMNS",
    "FLEET_QUALITY_COLUMNS",
    "FleetProgress",
    "HubModel",
    "bench_workers",
    "compare",
    "connect",
    "current_client",
    "existing_client",
    "fleet_benchmark",
    "hub_model",
    "run_task",
    "version_differences",
]
