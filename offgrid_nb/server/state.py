"""What the ``/v1`` handlers share (settings, download jobs, the model gate) and the core calls
they make, each meant to run in a worker thread (see :func:`offgrid_nb.server.threads.in_thread`).
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..batching import model_status, slots_status
from ..bench import benchmark, system_info
from ..chat import Reply, complete, generate
from ..chat_template import file_template
from ..config import get_settings
from ..embed import embed_counted
from ..engine import LoadedModel, load_model, loaded_model, loaded_models, unload_model
from ..errors import UnsupportedModelError
from ..fit import available_memory, estimate_memory, machine_devices, machine_plan, recommend
from ..gguf_info import inspect_file, inspect_gguf, local_header
from ..library import find_model, list_models, remove_model, verify_model
from ..names import parse_quant, quant_matches
from ..perplexity import ChunkProgress, perplexity
from ..quality import quality, repo_variants
from ..search_fit import search
from . import responses
from .config import OffgridAPI
from .jobs import DownloadJobs, RunJobs
from .keep_alive import KeepAlive, parse_duration
from .params import ChatRequest, CompletionRequest, RunRequest
from .threads import ModelGate

KEEP_BENCHMARKS = 50  # benchmark runs kept in memory for GET /v1/benchmark


def _is_loaded(path: Path) -> bool:
    """llama.cpp holds this model file now."""
    return any(loaded.path == path.resolve() for loaded in loaded_models())


@dataclass
class ApiState:
    """Settings, download jobs, the model gate, the kept benchmark runs and the perplexity and
    quality runs of one server."""

    config: OffgridAPI
    jobs: DownloadJobs
    gate: ModelGate
    keep_alive: KeepAlive
    runs: RunJobs
    benchmarks: deque[responses.JSON] = field(default_factory=lambda: deque(maxlen=KEEP_BENCHMARKS))

    @classmethod
    def from_config(cls, config: OffgridAPI) -> ApiState:
        """A fresh state for these settings.

        Raises:
            InvalidArgumentError: the keep_alive setting is not a duration.
        """
        gate = ModelGate(config.max_queued_generations, config.parallel)
        keep = KeepAlive(parse_duration(config.keep_alive), gate)
        runs = RunJobs(gate, keep.touch)
        return cls(config, DownloadJobs(config.max_download_jobs), gate, keep, runs)

    @property
    def models_dir(self) -> Path:
        """The configured models folder, else the library's default (resolved now)."""
        configured = self.config.models_dir
        return Path(configured).expanduser() if configured else get_settings().models_dir

    def model_path(self, name: str) -> Path:
        """The file of the library model ``name``, in any enabled source (a name, never a path
        the request chose: :func:`offgrid_nb.server.params.model_name` refuses those)."""
        return find_model(name, self.models_dir).path

    def search(self, **options: Any) -> responses.JSON:
        """``/v1/search``: :func:`offgrid_nb.search_fit.search` in OffGrid's shape."""
        return responses.search_results(search(**options))

    def inspect(
        self,
        repository: str,
        file: str,
        n_ctx: int | None,
        ram_gb: float | None,
        vram_gb: float | None = None,
    ) -> responses.JSON:
        """``/v1/inspect``: a Hub file's GGUF header, without downloading it, and whether it
        fits in ``ram_gb`` (default: the RAM available now) at ``n_ctx`` in each of this
        server's ``parallel`` slots (and ``vram_gb`` of GPU memory, else this machine's)."""
        available_memory(ram_gb)  # a bad ram_gb or vram_gb fails before any request
        machine_devices(ram_gb=ram_gb, vram_gb=vram_gb)
        info = inspect_gguf(repository, file)
        try:
            estimate = estimate_memory(info, n_ctx, parallel=self.config.parallel)
        except UnsupportedModelError as exc:  # the header is still worth showing
            return responses.inspection(repository, file, info, None, None, exc)
        plan = machine_plan(info, estimate, ram_gb=ram_gb, vram_gb=vram_gb)
        return responses.inspection(repository, file, info, estimate, plan.ram_verdict, None, plan)

    def variants(
        self,
        repository: str,
        n_ctx: int | None,
        ram_gb: float | None,
        vram_gb: float | None = None,
    ) -> responses.JSON:
        """``/v1/variants``: every variant of a Hub repo with its memory estimate and fit
        (RAM, and GPU offload: ``offload``, ``gpu_layers`` of ``n_layers``, ``vram_gb``)."""
        df = recommend(repository, ram_gb=ram_gb, vram_gb=vram_gb, n_ctx=n_ctx or 4096)
        return responses.variant_list(repository, df)

    def library(self, *, details: bool = False) -> responses.JSON:
        """``/v1/models``: the local models (with ``details``, what their headers say)."""
        df = list_models(self.models_dir)
        headers = {path: local_header(Path(path)) for path in df["path"]} if details else None
        choices = [file_template(Path(path)) for path in df["path"]]
        templates = [choice.describe() if choice else None for choice in choices]
        return responses.model_list(df, loaded_model(), templates, headers)

    def model_details(self, name: str) -> responses.JSON:
        """``GET /v1/models/{name}``: one local model and what its header says."""
        model = find_model(name, self.models_dir)
        info = inspect_file(model.path)
        return responses.model_details(model, self.models_dir, info, _is_loaded(model.path))

    def remove(self, name: str) -> responses.JSON:
        """``DELETE /v1/models/{name}``: unload it if loaded, then delete its files."""
        model = find_model(name, self.models_dir)
        if _is_loaded(model.path):
            unload_model(model.path)
        removed = remove_model(str(model.path), self.models_dir)
        return {"id": name, "deleted": True, "files": [p.name for p in removed]}

    def verify(self, name: str) -> responses.JSON:
        """``POST /v1/models/{name}/verify``: re-hash against the recorded sha256."""
        return {"id": name, "ok": verify_model(name, self.models_dir)}

    def start_reply(self, request: ChatRequest) -> Reply:
        """Load the model (if needed) and prepare the reply; iterating it generates."""
        return complete(
            self.model_path(request.model),
            request.messages,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            seed=request.seed,
            template=request.template,
            format=request.format,
            grammar=request.grammar,
            tools=request.tools,
            tool_choice=request.tool_choice,
            parallel_tool_calls=request.parallel_tool_calls,
            **self.generation_options(),
        )

    def start_completion(self, request: CompletionRequest) -> Reply:
        """``/v1/completions``: load the model (if needed) and prepare the text's continuation."""
        return generate(
            self.model_path(request.model),
            request.prompt,
            stream=True,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stop=request.stop,
            seed=request.seed,
            format=request.format,
            grammar=request.grammar,
            **self.generation_options(),
        )

    def load(self, path: Path, *, unload: bool = False) -> None:
        """Load a model ahead of use (Ollama's empty generate), or unload it."""
        if unload:
            if _is_loaded(path):
                unload_model(path)
            return
        load_model(path, **self.generation_options())

    def generation_options(self) -> dict[str, int | None]:
        """What every generation on this server is run with: threads and slots."""
        return {"n_threads": self.config.default_threads or None, "parallel": self.config.parallel}

    def embed(self, path: Path, texts: list[str]) -> tuple[np.ndarray, int]:
        """``/v1/embeddings`` and ``/api/embed``: one vector per text, and the token count
        (a chat model embeds in the context its chats use: same options, no second load)."""
        return embed_counted(path, texts, **self.generation_options())

    def loaded(self) -> list[responses.JSON]:
        """What is loaded, for ``/v1/ps`` and ``/api/ps``, the most recently used first:
        name, file, memory, deadline, slots."""
        return [self._loaded_entry(loaded) for loaded in loaded_models()]

    def _loaded_entry(self, loaded: LoadedModel) -> responses.JSON:
        try:
            memory = estimate_memory(
                loaded.info, n_ctx=loaded.n_ctx, parallel=loaded.parallel
            ).total_bytes
        except UnsupportedModelError:
            memory = loaded.path.stat().st_size
        return {
            **(responses.loaded_model(loaded) or {}),
            "path": str(loaded.path),
            "size": loaded.path.stat().st_size,
            "memory_bytes": memory,
            "embedding": loaded.embedding,
            "expires_at": self.keep_alive.expires_at(loaded.path),
            "slots": model_status(loaded),  # {"parallel", "busy", "queued"}
        }

    def benchmark(self, model: str, **options: Any) -> responses.JSON:
        """``POST /v1/benchmark``: the benchmark issue's JSON shape, kept, with the run's ``id``
        and ``model_id`` (the name the client gave)."""
        threads = self.config.default_threads or None
        result = benchmark(self.model_path(model), n_threads=threads, **options).to_dict()
        run = {"id": uuid.uuid4().hex, "model_id": model, **result}
        self.benchmarks.append(run)  # one C call under the GIL, as the IOLoop's copy below
        return run

    def benchmark_runs(self, model: str | None) -> responses.JSON:
        """``GET /v1/benchmark``: the kept runs, oldest first (of one model, if given)."""
        kept = list(self.benchmarks)  # a copy: a worker may append meanwhile
        runs = [run for run in kept if model is None or run["model_id"] == model]
        return {"object": "list", "data": runs}

    def check_run(self, request: RunRequest) -> None:
        """What a run needs that is there now, checked before its job starts: the local
        models (and reference), or the repo's variants of the quants asked.

        Raises:
            NotFoundError, AmbiguousError: a model, repo or variant that is not there.
        """
        if isinstance(request.model, str) and request.kind == "quality":
            repo_variants(request.model, request.quants)
        else:
            for name in [request.model] if isinstance(request.model, str) else request.model:
                self.model_path(name)
        self._reference(request.reference)

    def _reference(self, reference: str | None) -> str | None:
        """A quant name as it is; a local model's name as its file."""
        if reference is None or quant_matches(parse_quant(reference), reference):
            return reference
        return str(self.model_path(reference).resolve())

    def run_work(
        self, request: RunRequest
    ) -> Callable[[Callable[[ChunkProgress], None], threading.Event], Any]:
        """The job's work: ``(progress, cancel) -> JSON`` (a perplexity result's dict, or the
        quality table's rows), run in the job's thread."""
        threads = self.config.default_threads or None

        def run(progress: Callable[[ChunkProgress], None], cancel: threading.Event) -> Any:
            options: dict[str, Any] = {
                "text": request.text, "dataset": request.dataset, "n_ctx": request.n_ctx,
                "chunks": request.chunks, "n_threads": threads, "progress": progress,
                "cancel": cancel,
            }  # fmt: skip
            if request.kind == "perplexity":
                return perplexity(self.model_path(str(request.model)), **options).to_dict()
            models = request.model
            if not isinstance(models, str):  # local names, as this server's folder has them
                models = [str(self.model_path(name).resolve()) for name in models]
            table = quality(
                models, reference=self._reference(request.reference), quants=request.quants,
                speed=request.speed, models_dir=self.models_dir, **options,
            )  # fmt: skip
            return responses.records(table)

        return run

    def health(self) -> responses.JSON:
        """Version, loaded model and system figures (the counters are added on the IOLoop)."""
        return {
            "status": "ok",
            "version": __version__,
            "loaded_model": responses.loaded_model(loaded_model()),
            "models_dir": str(self.models_dir),
            "system": system_info(),
            "loaded_models": len(loaded_models()),
            "slots": slots_status(),  # {"parallel", "busy", "queued", "max_queue"}, all models
        }
