"""An Ollama-compatible API beside ``/v1``: translation only, over the same core calls.

``{prefix}api/...``: version, tags, show, ps, chat, generate, pull, delete, embed and the
legacy embeddings, as Ollama's API documents them, so Ollama's clients (the ``ollama`` Python
package, Open WebUI, Continue, Jupyter AI) work unchanged. Same handlers base, same auth, same
model gate and keep-alive as ``/v1``; streams are NDJSON (one JSON object a line, Ollama's
default), ``"stream": false`` answers once; durations are nanoseconds, measured. Errors are
Ollama's shape, ``{"error": "..."}``, with the same status codes as ``/v1``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from .. import __version__
from ..chat import Reply, Usage, check_messages, check_options, check_stop, complete, generate
from ..chat_template import file_template
from ..download import DownloadProgress, select_variant
from ..embed import check_texts
from ..errors import InvalidArgumentError, NotFoundError, OffgridError
from ..gguf_info import inspect_file, local_header
from ..library import list_models, remove_model
from ..refs import parse_hub_ref
from . import params, responses
from .handlers import EVENT_INTERVAL, OffgridHandler, run_reply
from .keep_alive import parse_duration
from .threads import in_thread

NS = 1_000_000_000


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class OllamaHandler(OffgridHandler):
    """Base of the ``/api`` handlers: Ollama's error shape and NDJSON streams."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """``{"error": message}``: an OffgridError's status and message, else tornado's."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, OffgridError):
            status_code, message = exc.http_status, str(exc)
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            message = HTTPStatus(status_code).phrase
        self.set_status(status_code)
        self.retry_header(exc)
        self.finish(responses.dumps({"error": message}))

    def model_field(self, body: params.Body) -> str:
        """The ``model`` field (``name`` in old clients), ``:latest`` dropped."""
        if "model" not in body and "name" in body:
            body = {**body, "model": body["name"]}
        return params.model_name(body).removesuffix(":latest")

    async def send_line(self, data: responses.JSON) -> None:
        """One NDJSON line; a failed flush means the client is gone."""
        if self.disconnected.is_set():
            return
        self.write(responses.dumps(data) + "\n")
        try:
            await self.flush()
        except StreamClosedError:
            self.disconnected.set()

    def keep_alive(self, body: params.Body) -> float | None:
        """The request's ``keep_alive`` in seconds (``None``: the server's default)."""
        value = body.get("keep_alive")
        return None if value is None else parse_duration(value)


def _options(body: params.Body) -> dict[str, Any]:
    """Ollama's ``options`` as our sampling keyword arguments."""
    options = params.checked(body, "options", "object", {})
    temperature = params.checked(options, "temperature", "number", 0.8)  # Ollama's default
    max_tokens = params.checked(options, "num_predict", "int", 512)
    if max_tokens < 0:  # -1: until the context is full
        max_tokens = 1 << 30
    check_options(temperature=temperature, max_tokens=max_tokens)
    return {
        "temperature": float(temperature),
        "max_tokens": max_tokens,
        "seed": params.checked(options, "seed", "int"),
        "n_ctx": params.checked(options, "num_ctx", "int"),
    }


def _timings(reply: Reply, started: float, load_s: float) -> responses.JSON:
    usage = reply.usage or Usage(0, 0, 0, 0.0, 0.0)
    return {
        "total_duration": int((time.perf_counter() - started) * NS),
        "load_duration": int(load_s * NS),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": int(usage.prompt_eval_ms * 1e6),
        "eval_count": usage.completion_tokens,
        "eval_duration": int(usage.eval_ms * 1e6),
    }


def _done_reason(reply: Reply) -> str:
    return "length" if reply.finish_reason == "length" else "stop"


class _Generation(OllamaHandler):
    """What ``/api/chat`` and ``/api/generate`` share: the gate, the stream, the last chunk."""

    failed = False  # the stream ended with an error line

    async def run(
        self,
        body: params.Body,
        start: Callable[[], Reply],
        piece: Callable[[str], responses.JSON],
    ) -> None:
        model, stream = self.model_field(body), params.checked(body, "stream", "bool", True)
        keep = self.keep_alive(body)
        started = time.perf_counter()
        head = {"model": model}
        with self.api.gate.slot():
            reply = await self.start_reply(start)
            load_s = time.perf_counter() - started
            if stream:
                self.set_header("Content-Type", "application/x-ndjson")
                await self._stream(reply, head, piece)
            else:
                await in_thread(run_reply, reply, self.disconnected)
        self.api.keep_alive.touch(keep, Path(reply.model))
        calls = reply.tools is not None and reply.tools.active
        if stream and calls and not self.failed and (reply.content or reply.tool_calls):
            await self.send_line({**head, "created_at": _now(), **_message(reply), "done": False})
        if stream or not calls:
            last = {**head, "created_at": _now(), **piece("" if stream else reply.text)}
        else:
            last = {**head, "created_at": _now(), **_message(reply)}
        last.update(done=True, done_reason=_done_reason(reply), **_timings(reply, started, load_s))
        if not stream:
            self.reply(last)
            return
        if not self.failed:
            await self.send_line(last)
        self.finish()

    async def _stream(
        self, reply: Reply, head: responses.JSON, piece: Callable[[str], responses.JSON]
    ) -> None:
        self.failed = False
        pieces = await self.started_pieces(reply)
        try:
            async for text in pieces:
                if reply.tools is not None and reply.tools.active:
                    continue  # sent whole once parsed
                line = {**head, "created_at": _now(), **piece(text), "done": False}
                await self.send_line(line)
        except OffgridError as exc:  # after the first line: Ollama's clients read {"error"}
            self.failed = True
            await self.send_line({"error": str(exc)})


def _message(reply: Reply) -> responses.JSON:
    """A reply's message in Ollama's shape: its calls' arguments are objects."""
    message: responses.JSON = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"function": {"name": call.name, "arguments": call.arguments}}
            for call in reply.tool_calls
        ]
    return {"message": message}


class ChatHandler(_Generation):
    """``POST /api/chat``: a reply to ``messages`` with the model's chat template."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Answer (NDJSON by default)."""
        body = self.body()
        model, options = self.model_field(body), _options(body)
        messages = check_messages(body.get("messages"))
        template = params.checked(body, "template", "str")
        fmt = params.ollama_format(body)
        tools = params.tool_fields(body)

        def start() -> Reply:
            return complete(
                self.api.model_path(model), messages, template=template, format=fmt,
                **tools, **options, **self.api.generation_options(),
            )  # fmt: skip

        await self.run(
            body, start, lambda text: {"message": {"role": "assistant", "content": text}}
        )


class GenerateHandler(_Generation):
    """``POST /api/generate``: the prompt as a user turn (``raw`` or a base model: continued).

    An empty prompt loads the model (or, with ``keep_alive: 0``, unloads it), as in Ollama.
    """

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Answer (NDJSON by default)."""
        body = self.body()
        model, options = self.model_field(body), _options(body)
        prompt = params.checked(body, "prompt", "str", "")
        if not prompt:
            await self._load_or_unload(model, body)
            return
        system = params.checked(body, "system", "str")
        raw = params.checked(body, "raw", "bool", False)
        stop = check_stop(params.checked(body, "options", "object", {}).get("stop"))
        fmt = params.ollama_format(body)

        def start() -> Reply:
            path = self.api.model_path(model)
            choice = file_template(path)
            if raw or choice is None or not choice.is_chat:
                return generate(
                    path, prompt, stream=True, stop=stop, format=fmt, **options,
                    **self.api.generation_options(),
                )  # fmt: skip
            turns = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            return complete(path, turns, format=fmt, **options, **self.api.generation_options())

        await self.run(body, start, lambda text: {"response": text})

    async def _load_or_unload(self, model: str, body: params.Body) -> None:
        keep = self.keep_alive(body)
        path = self.api.model_path(model)
        with self.api.gate.slot():
            await in_thread(self.api.load, path, unload=keep == 0)
        if keep != 0:
            self.api.keep_alive.touch(keep, path)
        reason = "unload" if keep == 0 else "load"
        self.reply({"model": model, "created_at": _now(), "response": "", "done": True,
                    "done_reason": reason})  # fmt: skip


def _details(path: Path) -> responses.JSON:
    info = local_header(path)
    if info is None:
        return {"format": "gguf"}
    count = info.parameter_count
    return {
        "parent_model": "",
        "format": "gguf",
        "family": info.architecture,
        "families": [info.architecture] if info.architecture else None,
        "parameter_size": f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.0f}M",
        "quantization_level": info.quant,
    }


def _digest(sha256: Any, path: str) -> str:
    """The recorded sha256, else a stable id of the file (its path hashed: never the file's
    bytes, so listing stays fast; the HF cache and LM Studio record none)."""
    if isinstance(sha256, str) and sha256:
        return sha256
    return hashlib.sha256(path.encode("utf-8")).hexdigest()


class TagsHandler(OllamaHandler):
    """``GET /api/tags``: the local models."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """List."""
        self.reply({"models": await in_thread(self._models)})

    def _models(self) -> list[responses.JSON]:
        df = list_models(self.api.models_dir)
        listed = responses.model_list(df, None, [None] * len(df))["data"]
        return [
            {
                "name": entry["id"],
                "model": entry["id"],
                "modified_at": datetime.fromtimestamp(entry["created"], timezone.utc).isoformat(),
                "size": entry["size"],
                "digest": _digest(row.sha256, row.path),
                "details": _details(Path(row.path)),
            }
            for entry, row in zip(listed, df.itertuples(), strict=True)
        ]


class ShowHandler(OllamaHandler):
    """``POST /api/show``: a model's details, header figures and chat template."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Describe."""
        model = self.model_field(self.body())
        self.reply(await in_thread(self._show, model))

    def _show(self, model: str) -> responses.JSON:
        path = self.api.model_path(model)
        info = inspect_file(path)
        arch = info.architecture or "unknown"
        choice = file_template(path)
        return {
            "modelfile": f"FROM {path}\n",
            "parameters": "",
            "template": info.chat_template or (choice.describe() if choice else ""),
            "details": _details(path),
            "model_info": {
                "general.architecture": arch,
                "general.parameter_count": info.parameter_count,
                f"{arch}.context_length": info.context_length,
                f"{arch}.embedding_length": info.n_embd,
                f"{arch}.block_count": info.n_layers,
            },
            # tools: on every chat model (offgrid_nb.tool_calls' generic format without support)
            "capabilities": [
                "completion",
                "embedding",
                *(["tools"] if choice and choice.is_chat else []),
            ],
            "modified_at": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(),
        }


class PsHandler(OllamaHandler):
    """``GET /api/ps``: the loaded models (most recently used first) and until when they stay."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Report."""
        self.reply({"models": [_running(loaded) for loaded in await in_thread(self.api.loaded)]})


def _running(loaded: responses.JSON) -> responses.JSON:
    """One loaded model in Ollama's ``/api/ps`` shape."""
    expires = loaded["expires_at"]
    until = datetime.fromtimestamp(expires, timezone.utc) if expires else datetime.max
    name = loaded["name"]
    return {
        "name": name, "model": name, "size": loaded["memory_bytes"], "digest": "",
        "details": _details(Path(loaded["path"])), "size_vram": 0,
        "expires_at": until.replace(tzinfo=timezone.utc).isoformat(),
        "context_length": loaded["n_ctx"],
    }  # fmt: skip


class PullHandler(OllamaHandler):
    """``POST /api/pull``: ``hf.co/owner/repo[:QUANT]`` as one of the server's download jobs
    (resumable, verified, bounded like ``POST /v1/models/download`` and listed with them);
    progress as ``{status, digest, total, completed}`` lines."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Download (streamed progress by default); a client that goes away leaves the job
        running, and pulling the same model again follows it."""
        body = self.body()
        name = self.model_field(body)
        ref = parse_hub_ref(name)
        if ref is None:
            raise InvalidArgumentError(
                f"Invalid model to pull: {name!r}", hint="name it hf.co/owner/repo[:QUANT]"
            )
        stream = params.checked(body, "stream", "bool", True)
        variant = await in_thread(select_variant, ref.repo_id, ref.file, quant=ref.quant)
        job = self.api.jobs.start(ref.repo_id, variant.filename, self.api.models_dir)
        if stream:
            self.set_header("Content-Type", "application/x-ndjson")
            await self.send_line({"status": "pulling manifest"})
        shown = None
        while not self.disconnected.is_set():
            finished = job.finished  # read first: the progress sent is then at least this late
            if stream and job.progress is not None and job.progress != shown:
                shown = job.progress
                for line in _pull_lines(shown):
                    await self.send_line(line)
            if finished:
                break
            await asyncio.sleep(EVENT_INTERVAL)
        if self.disconnected.is_set():
            return  # the job goes on; its progress is GET /v1/models/download/{id}
        if job.error is not None:
            if not stream:
                raise job.error
            await self.send_line({"error": str(job.error)})
        elif not stream:
            self.reply({"status": "success"})
            return
        else:
            await self.send_line({"status": "success"})
        self.finish()


def _pull_lines(event: DownloadProgress) -> list[responses.JSON]:
    """Ollama's pull progress lines for one of our download events."""
    if event.status == "verifying":
        return [{"status": "verifying sha256 digest"}]
    pulling = {"status": f"pulling {event.filename}", "digest": event.filename,
               "total": event.total, "completed": event.bytes_done}  # fmt: skip
    return [pulling, {"status": "writing manifest"}] if event.status == "done" else [pulling]


class DeleteHandler(OllamaHandler):
    """``DELETE /api/delete``: remove a model from our models folder."""

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        """Remove (404 when there is no such model)."""
        model = self.model_field(self.body())
        await in_thread(remove_model, self.api.model_path(model), self.api.models_dir)
        self.finish()


class EmbedHandler(OllamaHandler):
    """``POST /api/embed``: ``input`` (text or texts) -> ``embeddings`` (unit vectors)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Embed."""
        body = self.body()
        model, texts = self.model_field(body), check_texts(body.get("input"))
        started = time.perf_counter()
        vectors, tokens = await self.embedded(model, texts, self.keep_alive(body))
        self.reply({
            "model": model, "embeddings": vectors.tolist(),
            "total_duration": int((time.perf_counter() - started) * NS),
            "prompt_eval_count": tokens,
        })  # fmt: skip


class EmbeddingsHandler(OllamaHandler):
    """``POST /api/embeddings`` (legacy): ``prompt`` -> ``embedding``."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Embed one text."""
        body = self.body()
        model = self.model_field(body)
        texts = check_texts(params.checked(body, "prompt", "str", required=True))
        vectors, _ = await self.embedded(model, texts, self.keep_alive(body))
        self.reply({"embedding": vectors[0].tolist()})


class VersionHandler(OllamaHandler):
    """``GET /api/version``."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Our version."""
        self.reply({"version": __version__})


class ApiNotFoundHandler(OllamaHandler):
    """Any other ``/api`` path: Ollama's 404."""

    async def prepare(self) -> None:
        """Authenticate, then answer 404."""
        await super().prepare()
        raise NotFoundError(f"No endpoint {self.request.path}")


ENDPOINTS: list[tuple[str, type[OllamaHandler]]] = [
    ("version", VersionHandler),
    ("tags", TagsHandler),
    ("show", ShowHandler),
    ("ps", PsHandler),
    ("chat", ChatHandler),
    ("generate", GenerateHandler),
    ("pull", PullHandler),
    ("delete", DeleteHandler),
    ("embed", EmbedHandler),
    ("embeddings", EmbeddingsHandler),
    (".*", ApiNotFoundHandler),
]


def routes(prefix: str, api: Any) -> list[tuple[str, type[OllamaHandler], dict[str, Any]]]:
    """Tornado routes of the Ollama-compatible endpoints under ``{prefix}api/``."""
    return [
        (url_path_join(prefix, "api", path), handler, {"api": api}) for path, handler in ENDPOINTS
    ]
