"""What the ``/v1`` handlers share (settings, download jobs, the model gate) and the core calls
they make, each meant to run in a worker thread (see :func:`offgrid_nb.server.threads.in_thread`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..bench import benchmark, system_info
from ..chat import Reply, complete, generate
from ..chat_template import file_template
from ..config import get_settings
from ..embed import embed_counted
from ..engine import load_model, loaded_model, unload_model
from ..errors import UnsupportedModelError
from ..fit import available_memory, estimate_memory, fit_verdict
from ..gguf_info import inspect_gguf
from ..hub import search
from ..library import find_model, list_models
from . import responses
from .config import OffgridAPI
from .jobs import DownloadJobs
from .keep_alive import KeepAlive, parse_duration
from .params import ChatRequest, CompletionRequest
from .threads import ModelGate


@dataclass
class ApiState:
    """Settings, download jobs and the model gate of one server (Jupyter or standalone)."""

    config: OffgridAPI
    jobs: DownloadJobs
    gate: ModelGate
    keep_alive: KeepAlive

    @classmethod
    def from_config(cls, config: OffgridAPI) -> ApiState:
        """A fresh state for these settings.

        Raises:
            InvalidArgumentError: the keep_alive setting is not a duration.
        """
        gate = ModelGate(config.max_queued_generations)
        keep = KeepAlive(parse_duration(config.keep_alive), gate)
        return cls(config, DownloadJobs(config.max_download_jobs), gate, keep)

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
        fits in ``ram_gb`` (default: the RAM available now) at ``n_ctx``."""
        available = available_memory(ram_gb)
        info = inspect_gguf(repository, file)
        try:
            estimate = estimate_memory(info, n_ctx)
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
        )

    def load(self, path: Path, *, unload: bool = False) -> None:
        """Load a model ahead of use (Ollama's empty generate), or unload it."""
        if unload:
            current = loaded_model()
            if current is not None and current.path == path.resolve():
                unload_model()
            return
        load_model(path, n_threads=self.config.default_threads or None)

    def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, int]:
        """``/v1/embeddings`` and ``/api/embed``: one vector per text, and the token count."""
        threads = self.config.default_threads or None
        return embed_counted(self.model_path(model), texts, n_threads=threads)

    def loaded(self) -> responses.JSON | None:
        """What is loaded, for ``/v1/ps`` and ``/api/ps``: name, file, memory, deadline."""
        loaded = loaded_model()
        if loaded is None:
            return None
        try:
            memory = estimate_memory(loaded.info, n_ctx=loaded.n_ctx).total_bytes
        except UnsupportedModelError:
            memory = loaded.path.stat().st_size
        return {
            **(responses.loaded_model(loaded) or {}),
            "path": str(loaded.path),
            "size": loaded.path.stat().st_size,
            "memory_bytes": memory,
            "embedding": loaded.embedding,
            "expires_at": self.keep_alive.expires_at,
        }

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
        }
