"""The ``/v1`` handlers: one base class (auth, JSON bodies, one error mapping), thin endpoints.

Each endpoint parses its input on the IOLoop (:mod:`.params`, fast and pure), runs one core
call in a worker thread (:mod:`.state` via :func:`.threads.in_thread`) and renders the result
(:mod:`.responses`). Only the IOLoop thread writes to the connection.

The base class derives from jupyter_server's ``APIHandler`` in both servers: inside Jupyter it
gets the token/cookie login, XSRF and origin checks; the standalone server
(:mod:`.standalone`) mounts the same classes with its own identity provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from ..chat import Reply
from ..download import select_variant
from ..embed import check_texts
from ..errors import InvalidArgumentError, NotFoundError, OffgridError, ServerBusyError
from . import params, responses
from .jobs import DownloadJob, RunJob
from .state import ApiState
from .threads import in_thread

AUTH_RESOURCE = "offgrid"
EVENT_INTERVAL = 0.5  # seconds between checks of a download job's progress for its event stream


class OffgridHandler(APIHandler):
    """Base of every ``/v1`` handler: errors as ``{"error": {"message", "type", ...}}``."""

    auth_resource = AUTH_RESOURCE

    def initialize(self, api: ApiState) -> None:
        """Tornado passes the server's shared state to every request."""
        self.api = api
        self.disconnected = threading.Event()  # set when the client goes away

    reply_in_flight: Reply | None = None  # what this request is generating, if anything

    def on_connection_close(self) -> None:
        """The client went away: tell the worker thread, free its reply's slot at the next
        step (generation stops at its next token)."""
        self.disconnected.set()
        if self.reply_in_flight is not None:
            self.reply_in_flight.cancel()

    async def start_reply(self, start: Callable[[], Reply]) -> Reply:
        """Prepare a reply in a worker thread (loading the model if needed); it is cancelled
        if the client goes away, even while it waits for a slot."""
        reply = await in_thread(start)
        self.reply_in_flight = reply
        if self.disconnected.is_set():
            reply.cancel()
        return reply

    async def embedded(
        self, model: str, texts: list[str], keep_alive: float | None = None
    ) -> tuple[np.ndarray, int]:
        """``texts`` embedded by ``model`` (waiting its turn at the gate), and their token
        count; the model is then kept ``keep_alive`` seconds (default: the server's)."""
        with self.api.gate.slot():
            path = await in_thread(self.api.model_path, model)
            result = await in_thread(self.api.embed, path, texts)
        self.api.keep_alive.touch(keep_alive, path)
        return result

    async def reply_pieces(self, reply: Reply) -> AsyncIterator[str]:
        """Generate ``reply`` in a worker thread; yield its text as it comes (what arrived
        meanwhile as one string); at the end, raise the reply's error if it failed."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def send(piece: str) -> None:  # in the worker thread
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        worker = in_thread(run_reply, reply, self.disconnected, send)
        worker.add_done_callback(lambda _: pieces.put_nowait(None))  # after every piece
        piece: str | None = ""
        while piece is not None:
            text, piece = "", await pieces.get()
            while piece is not None:
                text += piece
                if pieces.empty():
                    break
                piece = pieces.get_nowait()
            if text:
                yield text
        await worker

    async def started_pieces(self, reply: Reply) -> AsyncIterator[str]:
        """:meth:`reply_pieces`, once its first piece came: what fails before it (the queue
        full or waited too long, a prompt too long) fails the request with its own status,
        not a 200 stream that carries an error."""
        pieces = self.reply_pieces(reply)
        first = None
        with contextlib.suppress(StopAsyncIteration):
            first = await anext(pieces)

        async def all_pieces() -> AsyncIterator[str]:
            if first is not None:
                yield first
            async for piece in pieces:
                yield piece

        return all_pieces()

    def body(self) -> params.Body:
        """The request body as a JSON object (400 otherwise)."""
        return params.json_object(self.request.body)

    def query(self) -> dict[str, str]:
        """The query arguments (the last value of each)."""
        return {name: self.get_query_argument(name) for name in self.request.query_arguments}

    def reply(self, data: responses.JSON, status: int = 200) -> None:
        """Send ``data`` as JSON."""
        self.set_status(status)
        self.finish(responses.dumps(data))

    def start_events(self) -> None:
        """Answer with server-sent events (each sent by :meth:`send_event`)."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")

    async def send_event(self, data: responses.JSON | str) -> None:
        """One server-sent event; a failed flush means the client is gone."""
        if self.disconnected.is_set():
            return
        text = data if isinstance(data, str) else responses.dumps(data)
        self.write(f"data: {text}\n\n")
        try:
            await self.flush()
        except StreamClosedError:
            self.disconnected.set()

    async def stream_job(
        self, finished: Callable[[], bool], state: Callable[[], responses.JSON]
    ) -> None:
        """A job's ``state()`` as server-sent events, one whenever it changed (checked every
        :data:`EVENT_INTERVAL` seconds) until ``finished()``, then ``data: [DONE]``."""
        self.start_events()
        last = None
        while not self.disconnected.is_set():
            ended = finished()  # read first: the state sent is then at least this late
            current = state()
            if current != last:
                await self.send_event(current)
                last = current
            if ended:
                break
            await asyncio.sleep(EVENT_INTERVAL)
        await self.send_event("[DONE]")
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """One mapping for every error: an OffgridError's ``http_status``, else tornado's."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, OffgridError):
            status_code = exc.http_status
            self.set_status(status_code)
            body = responses.error(status_code, exc.message, exc=exc)
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
            body = responses.error(status_code, message)
        else:
            body = responses.error(status_code, HTTPStatus(status_code).phrase)
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="offgrid"')
        self.retry_header(exc)
        self.finish(responses.dumps(body))

    def retry_header(self, exc: BaseException | None) -> None:
        """``Retry-After`` on a 503 for a full or slow queue (clients back off by it)."""
        if isinstance(exc, ServerBusyError):
            self.set_header("Retry-After", str(exc.retry_after))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """OffgridErrors are answers, not crashes: one line, no traceback."""
        if isinstance(value, OffgridError):
            self.log.info("%s %s -> %s", self.request.method, self.request.path, value)
        else:
            super().log_exception(typ, value, tb)


class SearchHandler(OffgridHandler):
    """``GET|POST /v1/search``: the Hub's GGUF models, filtered, scored."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Filters in the query string."""
        await self._search(self.query(), from_text=True)

    @web.authenticated
    @authorized("read")
    async def post(self) -> None:
        """Filters in a JSON body."""
        await self._search(self.body(), from_text=False)

    async def _search(self, values: dict[str, Any], *, from_text: bool) -> None:
        limit = self.api.config.max_search_limit
        options = params.search_query(values, from_text=from_text, max_limit=limit)
        self.reply(await in_thread(self.api.search, **options))


class InspectHandler(OffgridHandler):
    """``GET /v1/inspect?repository=&file=[&n_ctx=&ram_gb=]``: header and memory estimate."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Read the header over HTTP ranges (no download)."""
        self.reply(await in_thread(self.api.inspect, **params.inspect_query(self.query())))


class VariantsHandler(OffgridHandler):
    """``GET /v1/variants?repository=[&n_ctx=&ram_gb=]``: a Hub repo's variants and their fit."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Read each variant's header over HTTP ranges and compare its needs with the RAM."""
        self.reply(await in_thread(self.api.variants, **params.variants_query(self.query())))


class ModelsHandler(OffgridHandler):
    """``GET /v1/models[?details=true]``: the local library, in OpenAI's list shape."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """List the models folder (``details``: also read each model's header)."""
        fields = params.read_fields(self.query(), params.MODELS_FIELDS, from_text=True)
        self.reply(await in_thread(self.api.library, details=bool(fields["details"])))


class ModelHandler(OffgridHandler):
    """``GET|DELETE /v1/models/{name}``: one local model's details; delete it."""

    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        """Its files, manifest and header."""
        self.reply(await in_thread(self.api.model_details, params.safe_model_name(name)))

    @web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        """Delete it (waits its turn like a chat completion: the model may be in use)."""
        name = params.safe_model_name(name)
        with self.api.gate.slot():
            self.reply(await in_thread(self.api.remove, name))


class VerifyHandler(OffgridHandler):
    """``POST /v1/models/{name}/verify``: re-hash a local model against its recorded sha256."""

    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        """``{"id", "ok"}``; a corrupt file answers 502 naming it."""
        self.reply(await in_thread(self.api.verify, params.safe_model_name(name)))


class DownloadHandler(OffgridHandler):
    """``GET|POST /v1/models/download``: the jobs the server knows; start a download job."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every known job, oldest first (finished ones are kept for a while)."""
        jobs = [responses.download_job(job) for job in list(self.api.jobs.jobs.values())]
        self.reply({"object": "list", "data": jobs})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Pick the file now (errors answer at once), then download it in a job."""
        repository, file_name, quantization, connections = params.download_request(self.body())
        variant = await in_thread(select_variant, repository, file_name, quant=quantization)
        job = self.api.jobs.start(
            repository, variant.filename, self.api.models_dir, connections=connections
        )
        self.set_header("Location", url_path_join(self.request.path, job.id))
        self.reply(responses.download_job(job), status=202)


def _job(api: ApiState, job_id: str) -> DownloadJob:
    job = api.jobs.get(job_id)
    if job is None:
        raise NotFoundError(f"No download job {job_id!r}", hint="jobs are kept for a while")
    return job


class DownloadJobHandler(OffgridHandler):
    """``GET|DELETE /v1/models/download/{id}``: progress; cancel (the partial stays)."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """Progress, or the outcome."""
        self.reply(responses.download_job(_job(self.api, job_id)))

    @web.authenticated
    @authorized
    async def delete(self, job_id: str) -> None:
        """Ask the job to stop; its status is "cancelling" until its thread has stopped."""
        job = _job(self.api, job_id)
        if not job.finished:
            job.cancel.set()
        self.reply(responses.download_job(job))


class DownloadEventsHandler(OffgridHandler):
    """``GET /v1/models/download/{id}/events``: the job's progress as server-sent events.

    One event (the job's JSON, as ``GET /v1/models/download/{id}`` answers) whenever it has
    changed, checked every :data:`EVENT_INTERVAL` seconds; the last one has a finished status
    (``done``, ``failed``, ``cancelled``) and is followed by ``data: [DONE]``.
    """

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        """Stream until the job ends or the client goes away."""
        job = _job(self.api, job_id)
        await self.stream_job(lambda: job.finished, lambda: responses.download_job(job))


RUN_REQUESTS = {"perplexity": params.perplexity_request, "quality": params.quality_request}


class RunsHandler(OffgridHandler):
    """``GET|POST /v1/perplexity`` and ``/v1/quality``: the kept runs; start a run job."""

    @web.authenticated
    @authorized
    async def get(self, kind: str) -> None:
        """The kept jobs of this kind, oldest first."""
        jobs = [responses.run_job(job) for job in self.api.runs.of_kind(kind)]
        self.reply({"object": "list", "data": jobs})

    @web.authenticated
    @authorized
    async def post(self, kind: str) -> None:
        """Check the parameters and what they name now (errors answer at once), then queue
        the run; 202 with the job and its ``Location``."""
        request = RUN_REQUESTS[kind](self.body())
        await in_thread(self.api.check_run, request)
        job = self.api.runs.start(kind, request.to_json(), self.api.run_work(request))
        self.set_header("Location", url_path_join(self.request.path, job.id))
        self.reply(responses.run_job(job), status=202)


def _run_job(api: ApiState, kind: str, job_id: str) -> RunJob:
    job = api.runs.get(kind, job_id)
    if job is None:
        raise NotFoundError(f"No {kind} job {job_id!r}", hint="jobs are kept for a while")
    return job


class RunJobHandler(OffgridHandler):
    """``GET|DELETE /v1/perplexity/{id}`` and ``/v1/quality/{id}``: progress; cancel."""

    @web.authenticated
    @authorized
    async def get(self, kind: str, job_id: str) -> None:
        """Progress, or the outcome."""
        self.reply(responses.run_job(_run_job(self.api, kind, job_id)))

    @web.authenticated
    @authorized
    async def delete(self, kind: str, job_id: str) -> None:
        """Cancel it: a queued job at once; a running one is "cancelling" until its next
        decode stops it."""
        job = _run_job(self.api, kind, job_id)
        if not job.finished:
            job.stop()
        self.reply(responses.run_job(job))


class RunEventsHandler(OffgridHandler):
    """``GET /v1/perplexity/{id}/events`` and ``/v1/quality/{id}/events``: the job's JSON as
    server-sent events, as the download events (after each chunk, at most every
    :data:`EVENT_INTERVAL` seconds), then ``data: [DONE]``."""

    @web.authenticated
    @authorized
    async def get(self, kind: str, job_id: str) -> None:
        """Stream until the job ends or the client goes away."""
        job = _run_job(self.api, kind, job_id)
        await self.stream_job(lambda: job.finished, lambda: responses.run_job(job))


def run_reply(
    reply: Reply, stop: threading.Event, send: Callable[[str], None] | None = None
) -> None:
    """Iterate ``reply`` (in a worker thread) until it ends or ``stop`` is set, passing each
    piece to ``send``; then close it in this same thread, as the core requires."""
    try:
        if stop.is_set():
            return
        for piece in reply:
            if send is not None:
                send(piece)
            if stop.is_set():
                break
    finally:
        reply.close()


class GenerationHandler(OffgridHandler):
    """What the chat and text completion endpoints share: the gate, whole or streamed answers."""

    async def answer(
        self,
        start: Callable[[], Reply],
        completion: responses.Completion,
        *,
        stream: bool,
        include_usage: bool,
    ) -> None:
        """Start a reply (it waits for a slot; 503 past the queue bound) and send it."""
        with self.api.gate.slot():
            reply = await self.start_reply(start)
            if stream:
                await self._stream(reply, completion, include_usage=include_usage)
            else:
                await in_thread(run_reply, reply, self.disconnected)
        self.api.keep_alive.touch(model=Path(reply.model))
        if not stream and not self.disconnected.is_set():
            self.reply(completion.whole(reply))

    async def _stream(
        self, reply: Reply, completion: responses.Completion, *, include_usage: bool
    ) -> None:
        pieces = await self.started_pieces(reply)
        self.start_events()
        opening = completion.opening()
        if opening is not None:
            await self.send_event(opening)
        calls = reply.tools is not None and reply.tools.active  # sent once parsed
        try:
            async for text in pieces:
                if not calls:
                    await self.send_event(completion.piece(text))
        except OffgridError as exc:
            await self.send_event(responses.error(exc.http_status, exc.message, exc=exc))
        else:
            if calls and reply.content:
                await self.send_event(completion.piece(reply.content))
            for chunk in completion.tool_call_chunks(reply) if calls else []:
                await self.send_event(chunk)
            reason = "tool_calls" if reply.tool_calls else reply.finish_reason
            await self.send_event(completion.closing(reason))
            if include_usage:
                await self.send_event(completion.usage_chunk(reply))
        await self.send_event("[DONE]")
        self.finish(set_content_type="text/event-stream")


class ChatHandler(GenerationHandler):
    """``POST /v1/chat/completions``: OpenAI-compatible, whole or as server-sent events."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Answer one chat completion (``template`` overrides the model's chat template)."""
        request = params.chat_request(self.body())
        await self.answer(
            lambda: self.api.start_reply(request),
            responses.Completion(request.model),
            stream=request.stream,
            include_usage=request.include_usage,
        )


class CompletionHandler(GenerationHandler):
    """``POST /v1/completions``: OpenAI's text completion (no chat template), for base models
    and scripts; whole or as server-sent events."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Continue one prompt."""
        request = params.completion_request(self.body())
        await self.answer(
            lambda: self.api.start_completion(request),
            responses.TextCompletion(request.model),
            stream=request.stream,
            include_usage=request.include_usage,
        )


class BenchmarkHandler(OffgridHandler):
    """``GET|POST /v1/benchmark``: the runs kept in memory; a new run on a local model."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """The last runs (``?model=``: of that model only), oldest first."""
        fields = params.read_fields(self.query(), params.BENCHMARK_LIST_FIELDS, from_text=True)
        self.reply(self.api.benchmark_runs(fields["model"]))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Run it (it waits its turn for the model like a chat completion)."""
        options = params.benchmark_request(self.body())
        with self.api.gate.slot():
            result = await in_thread(self.api.benchmark, **options)
        self.api.keep_alive.touch()
        self.reply(result)


class EmbeddingsHandler(OffgridHandler):
    """``POST /v1/embeddings``: OpenAI's shape; ``encoding_format`` ``float`` or ``base64``
    (little-endian float32, what the ``openai`` client asks for by default)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        """Embed ``input`` (a text or a list of texts)."""
        body = self.body()
        model, texts = params.model_name(body), check_texts(body.get("input"))
        encoding = params.checked(body, "encoding_format", "str", "float")
        if encoding not in ("float", "base64"):
            raise InvalidArgumentError(f"Invalid encoding_format: {encoding!r} (float or base64)")
        vectors, tokens = await self.embedded(model, texts)
        self.reply(responses.embeddings(model, vectors, tokens, base64=encoding == "base64"))


class PsHandler(OffgridHandler):
    """``GET /v1/ps``: the loaded models (most recently used first), their memory, slots and
    until when they stay loaded."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Report."""
        self.reply({"models": await in_thread(self.api.loaded)})


class HealthHandler(OffgridHandler):
    """``GET /v1/health``: version, loaded model, system figures, work in flight."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Report."""
        health = await in_thread(self.api.health)
        health["downloads_running"] = len(self.api.jobs.running())
        health["model_requests_in_flight"] = self.api.gate.in_flight
        self.reply(health)


class NotFoundHandler(OffgridHandler):
    """Any other path (standalone server): a JSON 404 after authentication."""

    async def prepare(self) -> None:
        """Authenticate, then answer 404."""
        await super().prepare()
        raise web.HTTPError(404, f"No endpoint {self.request.path}")


ENDPOINTS: list[tuple[str, type[OffgridHandler]]] = [
    ("search", SearchHandler),
    ("inspect", InspectHandler),
    ("variants", VariantsHandler),
    ("models", ModelsHandler),
    ("models/download", DownloadHandler),
    ("models/download/([^/]+)", DownloadJobHandler),
    ("models/download/([^/]+)/events", DownloadEventsHandler),
    ("models/(.+)/verify", VerifyHandler),
    ("models/(.+)", ModelHandler),  # after models/download: a model named so is reached by path
    ("chat/completions", ChatHandler),
    ("completions", CompletionHandler),
    ("benchmark", BenchmarkHandler),
    ("(perplexity|quality)", RunsHandler),
    ("(perplexity|quality)/([^/]+)", RunJobHandler),
    ("(perplexity|quality)/([^/]+)/events", RunEventsHandler),
    ("embeddings", EmbeddingsHandler),
    ("ps", PsHandler),
    ("health", HealthHandler),
]


def routes(prefix: str, api: ApiState) -> list[tuple[str, type[OffgridHandler], dict[str, Any]]]:
    """Tornado routes of every endpoint under ``{prefix}v1/``, sharing ``api``."""
    return [
        (url_path_join(prefix, "v1", path), handler, {"api": api}) for path, handler in ENDPOINTS
    ]
