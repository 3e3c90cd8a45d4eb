"""What the ``/v1`` handlers share (settings, download jobs, the model gate) and the core calls
they make, each meant to run in a worker thread (see :func:`offgrid_nb.server.threads.in_thread`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..batching import slots_status
from ..bench import benchmark, system_info
from ..chat import Reply, complete, generate
from ..chat_template import file_template
from ..config import get_settings
from ..engine import loaded_model
from ..errors import UnsupportedModelError
from ..fit import available_memory, estimate_memory, fit_verdict
from ..gguf_info import inspect_gguf
from ..hub import search
from ..library import find_model, list_models
from . import responses
from .config import OffgridAPI
from .jobs import DownloadJobs
from .params import ChatRequest, CompletionRequest
from .threads import ModelGate


@dataclass
class ApiState:
    """Settings, download jobs and the model gate of one server (Jupyter or standalone)."""

    config: OffgridAPI
    jobs: DownloadJobs
    gate: ModelGate

    @classmethod
    def from_config(cls, config: OffgridAPI) -> ApiState:
        """A fresh state for these settings."""
        return cls(
            config,
            DownloadJobs(config.max_download_jobs),
            ModelGate(config.max_queued_generations, config.parallel),
        )

    @property
    def models_dir(self) -> Path:
        """The configured models folder, else the library's default (resolved now)."""
        configured = self.config.models_dir
        return Path(configured).expanduser() if configured else get_settings().models_dir

    def model_path(self, name: str) -> Path:
        """The file of the library model ``name`` (never a file outside the models folder)."""
        return find_model(name, self.models_dir).path

    def search(self, **options: Any) -> responses.JSON:
        """``/v1/search``: :func:`offgrid_nb.hub.search` in OffGrid's shape."""
        return responses.search_results(search(**options))

    def inspect(
        self, repository: str, file: str, n_ctx: int | None, ram_gb: float | None
    ) -> responses.JSON:
        """``/v1/inspect``: a Hub file's GGUF header, without downloading it, and whether it
        fits in ``ram_gb`` (default: the RAM available now) at ``n_ctx`` in each of this
        server's ``parallel`` slots."""
        available = available_memory(ram_gb)
        info = inspect_gguf(repository, file)
        try:
            estimate = estimate_memory(info, n_ctx, parallel=self.config.parallel)
        except UnsupportedModelError as exc:  # the header is still worth showing
            return responses.inspection(repository, file, info, None, None, exc)
        verdict = fit_verdict(estimate.total_bytes, available)
        return responses.inspection(repository, file, info, estimate, verdict, None)

    def library(self) -> responses.JSON:
        """``/v1/models``: the local models."""
        root, df = self.models_dir, list_models(self.models_dir)
        choices = [file_template(Path(path)) for path in df["path"]]
        templates = [choice.describe() if choice else None for choice in choices]
        return responses.model_list(df, root, loaded_model(), templates)

    def start_reply(self, request: ChatRequest) -> Reply:
        """Load the model (if needed) and prepare the reply; iterating it generates."""
        return complete(
            self.model_path(request.model),
            request.messages,
            n_threads=self.config.default_threads or None,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            seed=request.seed,
            template=request.template,
            parallel=self.config.parallel,
        )

    def start_completion(self, request: CompletionRequest) -> Reply:
        """``/v1/completions``: load the model (if needed) and prepare the text's continuation."""
        return generate(
            self.model_path(request.model),
            request.prompt,
            stream=True,
            n_threads=self.config.default_threads or None,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stop=request.stop,
            seed=request.seed,
            parallel=self.config.parallel,
        )

    def benchmark(self, model: str, **options: Any) -> responses.JSON:
        """``/v1/benchmark``: the benchmark issue's JSON shape."""
        threads = self.config.default_threads or None
        return benchmark(self.model_path(model), n_threads=threads, **options).to_dict()

    def health(self) -> responses.JSON:
        """Version, loaded model and system figures (the counters are added on the IOLoop)."""
        return {
            "status": "ok",
            "version": __version__,
            "loaded_model": responses.loaded_model(loaded_model()),
            "models_dir": str(self.models_dir),
            "system": system_info(),
            "slots": slots_status(),  # {"parallel", "busy", "queued"} of the loaded model
        }
