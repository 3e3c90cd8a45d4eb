"""JSON shapes of the ``/v1`` responses, each built in one place from core results."""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ..chat import Reply, Usage
    from ..engine import LoadedModel
    from ..errors import OffgridError
    from ..fit import MemoryEstimate, OffloadPlan
    from ..gguf_info import GGUFInfo
    from ..library import LocalModel
    from ..tool_calls import ToolCall
    from .jobs import DownloadJob, RunJob

JSON = dict[str, Any]

# OpenAI-style error types by status; the exception class goes in "code".
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    503: "overloaded_error",
}


def dumps(data: JSON | list[Any]) -> str:
    """``data`` as strict JSON text: the one serializer of every answer, stream line and event
    (``NaN`` or ``Infinity`` is a bug to fix where the value is made, never sent: clients'
    strict parsers reject it)."""
    return json.dumps(data, allow_nan=False)


def error(status: int, message: str, *, exc: OffgridError | None = None) -> JSON:
    """``{"error": {"message", "type", "code"[, "hint", "candidates"]}}``."""
    fallback = "server_error" if status >= 500 else "invalid_request_error"
    body: JSON = {
        "message": message,
        "type": _ERROR_TYPES.get(status, fallback),
        "code": type(exc).__name__ if exc is not None else HTTPStatus(status).phrase,
    }
    if exc is not None and exc.hint:
        body["hint"] = exc.hint
    if exc is not None and getattr(exc, "candidates", None):
        body["candidates"] = exc.candidates  # type: ignore[attr-defined]
    return {"error": body}


def _plain(value: Any) -> Any:
    """A JSON-safe value: NaN/NaT and missing values become ``None``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def records(df: pd.DataFrame) -> list[JSON]:
    """Rows as dicts of JSON-safe values (several times faster than ``df.to_dict``)."""
    bare = df.copy(deep=False)
    bare.attrs = {}  # pandas deep-copies attrs into every column it hands out
    columns = [bare[name].tolist() for name in df.columns]
    return [
        {name: _plain(value) for name, value in zip(df.columns, values, strict=True)}
        for values in zip(*columns, strict=True)
    ]


def search_results(df: pd.DataFrame) -> JSON:
    """A :func:`offgrid_nb.hub.search` DataFrame in OffGrid LLM's ``/v1/search`` shape."""
    results = []
    for row in records(df):
        result: JSON = {
            "model": {
                key: row[key]
                for key in ("id", "downloads", "likes", "tags", "library_name", "pipeline_tag")
            },
            "gguf_files": [
                {
                    "filename": v["filename"],
                    "size": v["size"],
                    "size_gb": v["size_gb"],
                    "quantization": v["quant"],
                    "parameter_size": v["param_size"],
                    "is_chat": v["is_chat"],
                    "download_url": v["download_url"],
                }
                for v in row["variants"]
            ],
            "best_variant": {
                "filename": row["best_file"],
                "quantization": row["best_quant"],
                "size_gb": row["best_size_gb"],
            }
            if row["best_file"]
            else None,
            "score": row["score"],
        }
        if "fits" in row:
            result["fits"] = row["fits"]
            result["total_gb"] = row["total_gb"]
        results.append(result)
    return {"total": int(df.attrs.get("total", len(df))), "results": results}


def header_summary(info: GGUFInfo | None) -> JSON:
    """What a local model's header says that a model list shows (``None``s if unreadable)."""
    return {
        "architecture": info.architecture if info else None,
        "context_length": info.context_length if info else None,
        "chat_template": bool(info and info.chat_template),
    }


def model_list(
    df: pd.DataFrame,
    loaded: LoadedModel | None,
    templates: list[str | None],
    headers: dict[str, GGUFInfo | None] | None = None,
) -> JSON:
    """The local library in OpenAI's ``GET /v1/models`` shape (ids are the library's unique
    names), plus source, size, quantization, the chat template each model gets (``templates``,
    one per row) and :func:`header_summary` of each model when ``headers`` maps its path to its
    header."""
    data = []
    for row, template in zip(records(df), templates, strict=True):
        path = Path(row["path"])
        created = row["downloaded_at"].timestamp() if row["downloaded_at"] else path.stat().st_mtime
        data.append(
            {
                "id": row["name"],
                "object": "model",
                "created": int(created),
                "owned_by": (row["repo_id"] or "local").split("/")[0],
                "size": row["size"],
                "size_gb": row["size"] / 1e9,
                "quantization": row["quant"],
                "parameter_size": row["param_size"],
                "repo_id": row["repo_id"],
                "source": row["source"],
                "template": template,
                "loaded": loaded is not None and loaded.path == path.resolve(),
                **(header_summary(headers.get(row["path"])) if headers is not None else {}),
            }
        )
    return {"object": "list", "data": data}


def embeddings(model: str, vectors: np.ndarray, tokens: int, *, base64: bool) -> JSON:
    """OpenAI's ``/v1/embeddings`` answer (``base64``: each vector's float32 bytes encoded)."""
    import base64 as b64

    def encode(vector: np.ndarray) -> Any:
        if base64:
            return b64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        return vector.tolist()

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _shown_path(path: Path, root: Path) -> str:
    """A model file as the API shows it: relative to our folder, else (other sources) whole."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def model_details(model: LocalModel, root: Path, info: GGUFInfo, loaded: bool) -> JSON:
    """``GET /v1/models/{name}``: one local model, its files and its header."""
    manifest = model.manifest
    return {
        "id": model.name,
        "object": "model",
        "files": [_shown_path(path, root) for path in model.files],
        "size": sum(path.stat().st_size for path in model.files),
        "quantization": info.quant,
        "repo_id": manifest.repo_id if manifest else None,
        "sha256": manifest.sha256_of(model.path) if manifest else None,
        "downloaded_at": manifest.downloaded_at if manifest else None,
        "loaded": loaded,
        **header_summary(info),
        "parameter_count": info.parameter_count,
        "header": info.to_dict(),
    }


def variant_list(repository: str, df: pd.DataFrame) -> JSON:
    """``/v1/variants``: a :func:`offgrid_nb.fit.recommend` DataFrame of one repo."""
    keys = ("filename", "quant", "size", "size_gb", "total_gb", "fits", "recommended", "error")
    keys += ("offload", "gpu_layers", "n_layers", "vram_gb")
    return {
        "repository": repository,
        "available_gb": df.attrs["available_bytes"] / 1e9,
        "variants": [{key: row[key] for key in keys} for row in records(df)],
    }


def _job_error(failure: OffgridError | None) -> JSON | None:
    """A job's error as the APIs' error bodies carry it, or ``None``."""
    return error(failure.http_status, failure.message, exc=failure)["error"] if failure else None


def download_job(job: DownloadJob) -> JSON:
    """A download job's progress, or its outcome."""
    progress, failure = job.progress, job.error
    return {
        "id": job.id,
        "repository": job.repository,
        "file_name": job.file_name,
        "status": job.status,
        "bytes": progress.bytes_done if progress else 0,
        "total": progress.total if progress else None,
        "speed": progress.speed if progress else 0.0,
        "eta": progress.eta if progress else None,
        "fraction": progress.fraction if progress else None,
        "connections": progress.connections if progress else None,
        "model": job.model,
        "error": _job_error(failure),
    }


def run_job(job: RunJob) -> JSON:
    """A perplexity or quality job: its parameters, progress, then result or error."""
    progress, failure = job.progress, job.error
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "request": job.request,
        "progress": None
        if progress is None
        else {"model": progress.model, "done": progress.done, "total": progress.total,
              "ppl": _plain(progress.ppl)},
        "result": job.result if job.outcome == "done" else None,
        "error": _job_error(failure),
    }  # fmt: skip


def inspection(
    repository: str,
    file: str,
    info: GGUFInfo,
    estimate: MemoryEstimate | None,
    verdict: str | None,
    failure: OffgridError | None,
    plan: OffloadPlan | None = None,
) -> JSON:
    """``/v1/inspect``: the header summary, the memory estimate, the verdict and where the
    layers would go (``offload``: verdict, ``gpu_layers`` of ``n_layers``, bytes per device)."""
    memory = None
    if estimate is not None:
        memory = {**asdict(estimate), "total_gb": estimate.total_gb}
    return {
        "repository": repository,
        "file": file,
        "header": info.to_dict(),
        "memory": memory,
        "fits": verdict,
        "offload": plan
        and {
            "verdict": plan.verdict,
            "gpu_layers": plan.gpu_layers,
            "n_layers": plan.n_layers + 1,
            "devices": dict(plan.device_bytes),
            "ram_bytes": plan.ram_bytes,
        },
        "memory_error": failure
        and error(failure.http_status, failure.message, exc=failure)["error"],
    }


def loaded_model(loaded: LoadedModel | None) -> JSON | None:
    """What llama.cpp holds now."""
    if loaded is None:
        return None
    return {
        "name": loaded.name,
        "quantization": loaded.info.quant,
        "n_ctx": loaded.n_ctx,
        "n_threads": loaded.n_threads,
        "n_gpu_layers": loaded.n_gpu_layers,
    }


def _openai_call(call: ToolCall) -> JSON:
    """A tool call in OpenAI's shape: ``function.arguments`` a JSON string."""
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}  # fmt: skip


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else reply.finish_reason


@dataclass(frozen=True)
class Completion:
    """One OpenAI chat completion being answered: whole, or as ``chat.completion.chunk``\\s.

    :class:`TextCompletion` has the same methods for ``/v1/completions``; the handlers stream
    either through them.
    """

    model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    kind = "chat.completion"
    chunk_kind = "chat.completion.chunk"

    def _head(self, kind: str) -> JSON:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    @staticmethod
    def _usage(usage: Usage | None) -> JSON:
        prompt = usage.prompt_tokens if usage else 0
        completion = usage.completion_tokens if usage else 0
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _choice(self, text: str, *, streamed: bool) -> JSON:
        if streamed:
            return {"delta": {"content": text}}
        return {"message": {"role": "assistant", "content": text}}

    def whole(self, reply: Reply) -> JSON:
        """The non-streaming answer (a chat reply's tool calls in ``message.tool_calls``)."""
        choice = {"index": 0, **self._choice(reply.content, streamed=False)}
        if reply.tool_calls:
            choice["message"] = {
                "role": "assistant",
                "content": reply.content or None,
                "tool_calls": [_openai_call(call) for call in reply.tool_calls],
            }
        choice["finish_reason"] = _finish_reason(reply)
        return {**self._head(self.kind), "choices": [choice], "usage": self._usage(reply.usage)}

    def tool_call_chunks(self, reply: Reply) -> list[JSON]:
        """A streamed reply's tool calls (sent when the reply is complete): for each call, a
        delta with ``index``, ``id``, ``type`` and ``function.name``, then its arguments."""
        chunks = []
        for index, call in enumerate(reply.tool_calls):
            head = {"index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}}  # fmt: skip
            arguments = {"index": index, "function": {"arguments": json.dumps(call.arguments)}}
            chunks += [self.chunk({"delta": {"tool_calls": [part]}}) for part in (head, arguments)]
        return chunks

    def chunk(self, body: JSON, finish_reason: str | None = None) -> JSON:
        """One streamed piece (``body`` is the choice's content: a delta, or a text)."""
        choice = {"index": 0, **body, "finish_reason": finish_reason}
        return {**self._head(self.chunk_kind), "choices": [choice]}

    def opening(self) -> JSON | None:
        """The first event of a stream (the assistant's role), if the shape has one."""
        return self.chunk({"delta": {"role": "assistant", "content": ""}})

    def piece(self, text: str) -> JSON:
        """A streamed piece of text."""
        return self.chunk(self._choice(text, streamed=True))

    def closing(self, finish_reason: str) -> JSON:
        """The event that ends the text, with why it ended."""
        return self.chunk({"delta": {}}, finish_reason)

    def usage_chunk(self, reply: Reply) -> JSON:
        """The last chunk when ``stream_options.include_usage`` is set."""
        return {**self._head(self.chunk_kind), "choices": [], "usage": self._usage(reply.usage)}


@dataclass(frozen=True)
class TextCompletion(Completion):
    """One OpenAI text completion (``/v1/completions``): whole or as streamed chunks."""

    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    kind = "text_completion"
    chunk_kind = "text_completion"

    def _choice(self, text: str, *, streamed: bool) -> JSON:
        return {"text": text, "logprobs": None}

    def opening(self) -> JSON | None:
        """Text completions start with the first piece."""
        return None

    def closing(self, finish_reason: str) -> JSON:
        """An empty text with the finish reason."""
        return self.chunk(self._choice("", streamed=True), finish_reason)
