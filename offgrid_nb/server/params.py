"""Request parsing: JSON bodies and query strings to checked arguments for core calls.

Everything here is pure and fast, so it runs on the IOLoop before any thread starts: bad input
is answered with a 400 without leaving a job or a thread behind.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from typing import Any

from ..chat import check_messages, check_options, check_stop
from ..chat_template import check_override
from ..corpus import LiteralText, check_source
from ..download import check_connections
from ..errors import InvalidArgumentError, UnsafePathError
from ..hub import check_repo_id
from ..library import is_safe_relative_path
from ..perplexity import check_options as check_chunking
from ..quality import check_quants
from ..structured import constraint
from ..tool_calls import check_tool_choice, check_tools

Body = dict[str, Any]

# JSON kinds a field may have; "size" is bytes (int) or text such as "4GB".
_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "number": (int, float),
    "size": (int, str),
    "object": (dict,),
    "list": (list,),
}
_KIND_NAMES = {
    "str": "a string",
    "int": "a whole number",
    "bool": "true or false",
    "number": "a number",
    "size": "a size in bytes or text such as 4GB",
    "object": "an object",
    "list": "a list",
}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}

SEARCH_FIELDS = {
    "query": "str",
    "author": "str",
    "quantization": "str",
    "sort_by": "str",
    "limit": "int",
    "min_downloads": "int",
    "max_size": "size",
    "only_gguf": "bool",
    "exclude_gated": "bool",
    "ram_gb": "number",
    "fits_only": "bool",
    "vram_gb": "number",
}
INSPECT_FIELDS = {
    "repository": "str", "file": "str", "n_ctx": "int", "ram_gb": "number", "vram_gb": "number",
}  # fmt: skip
VARIANTS_FIELDS = {"repository": "str", "n_ctx": "int", "ram_gb": "number", "vram_gb": "number"}
BENCHMARK_LIST_FIELDS = {"model": "str"}
MODELS_FIELDS = {"details": "bool"}
PERPLEXITY_FIELDS = {
    "model": "str", "text": "str", "dataset": "str", "n_ctx": "int", "chunks": "int",
}  # fmt: skip
QUALITY_FIELDS = {
    **PERPLEXITY_FIELDS, "model": "any", "quants": "list", "reference": "str", "speed": "bool",
}  # fmt: skip
SEARCH_ALIASES = {"sort": "sort_by"}
AUTH_QUERY_ARGUMENTS = {"token", "_xsrf", "no_track_activity"}  # read by Jupyter, not by us
DEFAULT_LIMIT = 20


def json_object(body: bytes) -> Body:
    """The request body as a JSON object.

    Raises:
        InvalidArgumentError: the body is empty, not JSON, or not an object.
    """
    try:
        value = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(
            "The request body must be a JSON object", hint='e.g. {"model": "...", ...}'
        )
    return value


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "bool":
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _KINDS[kind])


def checked(
    body: Body, name: str, kind: str, default: Any = None, *, required: bool = False
) -> Any:
    """``body[name]`` checked to be of ``kind`` (``None`` and absent give ``default``).

    Raises:
        InvalidArgumentError: a required field is missing, or a field has the wrong type.
    """
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidArgumentError(f"Missing field: {name}")
        return default
    if not _is(value, kind):
        raise InvalidArgumentError(f"Invalid {name}: {value!r} (must be {_KIND_NAMES[kind]})")
    return value


def _from_text(name: str, text: str, kind: str) -> Any:
    """A query-string value converted to ``kind``."""
    word = text.strip().lower()
    if kind == "int" and word.lstrip("-").isdigit():
        return int(word)
    if kind == "number":
        with contextlib.suppress(ValueError):
            return float(word)
    if kind == "bool" and word in _TRUE | _FALSE:
        return word in _TRUE
    if kind in ("str", "size"):
        return text
    raise InvalidArgumentError(f"Invalid {name}: {text!r} (must be {_KIND_NAMES[kind]})")


def _check_known(names: set[str], known: set[str]) -> None:
    unknown = sorted(names - known)
    if unknown:
        raise InvalidArgumentError(
            f"Unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
            hint=f"known: {', '.join(sorted(known))}",
        )


def read_fields(
    values: dict[str, Any],
    spec: dict[str, str],
    *,
    from_text: bool,
    aliases: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The fields of ``spec`` (name -> kind) from a JSON object or a query string.

    Args:
        values: the JSON object, or the query arguments (name -> last value, as text).
        spec: the known fields and their kinds; absent fields are ``None``.
        from_text: the values are query-string text, to convert to their kinds.
        aliases: other names accepted for some fields.

    Raises:
        InvalidArgumentError: unknown fields or wrong types.
    """
    aliases = aliases or {}
    if from_text:  # JupyterLab's requests also carry a cache buster: ?1712345678901
        values = {
            k: v for k, v in values.items() if k not in AUTH_QUERY_ARGUMENTS and not k.isdigit()
        }
    _check_known(set(values), set(spec) | set(aliases))
    body = {aliases.get(k, k): v for k, v in values.items()}
    if from_text:
        body = {k: _from_text(k, v, spec[k]) for k, v in body.items()}
    return {name: checked(body, name, kind) for name, kind in spec.items()}


def search_query(values: dict[str, Any], *, from_text: bool, max_limit: int) -> dict[str, Any]:
    """Keyword arguments for :func:`offgrid_nb.hub.search` (see :func:`read_fields`).

    Raises:
        InvalidArgumentError: unknown fields, wrong types, or a limit outside 1..max_limit.
    """
    fields = read_fields(values, SEARCH_FIELDS, from_text=from_text, aliases=SEARCH_ALIASES)
    limit = DEFAULT_LIMIT if fields["limit"] is None else fields["limit"]
    if not 1 <= limit <= max_limit:
        raise InvalidArgumentError(f"Invalid limit: {limit} (must be from 1 to {max_limit})")
    exclude_gated = fields["exclude_gated"]
    return {
        "query": fields["query"],
        "author": fields["author"],
        "quant": fields["quantization"],
        "sort": fields["sort_by"] or "downloads",
        "limit": limit,
        "include_gated": exclude_gated is False,
        "min_downloads": fields["min_downloads"] or 0,
        "max_size": fields["max_size"],
        "only_gguf": fields["only_gguf"] is not False,
        "ram_gb": fields["ram_gb"],
        "fits_only": bool(fields["fits_only"]),
        "vram_gb": fields["vram_gb"],
    }


def inspect_query(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``GET /v1/inspect`` from its query string.

    Raises:
        InvalidArgumentError: missing repository or file, unknown fields, wrong types.
    """
    fields = read_fields(values, INSPECT_FIELDS, from_text=True)
    for name in ("repository", "file"):
        checked(fields, name, "str", required=True)
    return fields


def variants_query(values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``GET /v1/variants`` from its query string.

    Raises:
        InvalidArgumentError: missing repository, unknown fields, wrong types.
    """
    fields = read_fields(values, VARIANTS_FIELDS, from_text=True)
    checked(fields, "repository", "str", required=True)
    return fields


def safe_model_name(name: str) -> str:
    """A model's name as a client gave it: as ``GET /v1/models`` lists it (``llama3.2:1b``,
    ``hf-cache:NAME``) or a Hub reference (``owner/repo:Q4_K_M``, ``hf.co/owner/repo:Q4_K_M``);
    never a path outside the models folder.

    Raises:
        UnsafePathError: absolute, ``~``, ``..``, backslashes or NUL.
    """
    name = name.strip()
    if name.startswith("~") or not is_safe_relative_path(name):
        raise UnsafePathError(
            f"Invalid model: {name!r}",
            hint="give a model's id as GET /v1/models lists it, not a path",
        )
    return name


def model_name(body: Body) -> str:
    """The ``model`` field of a body (see :func:`safe_model_name`).

    Raises:
        InvalidArgumentError: missing or not a string.
        UnsafePathError: absolute, ``~``, ``..``, backslashes or NUL.
    """
    return safe_model_name(checked(body, "model", "str", required=True))


@dataclass(frozen=True)
class ChatRequest:
    """A checked OpenAI chat completion request (fields we do not use are ignored)."""

    model: str
    messages: list[dict[str, str]]
    stream: bool
    include_usage: bool
    temperature: float
    max_tokens: int
    seed: int | None
    template: str | None = None
    format: Any = None  # "json" or a JSON schema (see offgrid_nb.structured)
    grammar: str | None = None
    tools: list[Any] | None = None  # OpenAI's tool specs (see offgrid_nb.tool_calls)
    tool_choice: Any = None
    parallel_tool_calls: bool = True


def tool_fields(body: Body) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` of a chat request, checked now.

    Raises:
        InvalidArgumentError: tools not a list, a tool without a name, an unknown tool_choice.
    """
    tools = body.get("tools")
    check_tool_choice(body.get("tool_choice"), check_tools(tools))
    return {
        "tools": tools or None,
        "tool_choice": body.get("tool_choice"),
        "parallel_tool_calls": checked(body, "parallel_tool_calls", "bool", True),
    }


@dataclass(frozen=True)
class CompletionRequest:
    """A checked OpenAI (legacy) text completion request: ``POST /v1/completions``."""

    model: str
    prompt: str
    stream: bool
    include_usage: bool
    temperature: float
    max_tokens: int
    stop: list[str]
    seed: int | None
    format: Any = None
    grammar: str | None = None


def output_format(body: Body) -> tuple[Any, str | None]:
    """``(format, grammar)`` of an OpenAI request: ``response_format`` (``text``,
    ``json_object``, ``json_schema`` with ``{name, schema, strict}``), or llama-server's
    ``json_schema`` (a schema) or ``grammar`` (GBNF); checked now (bad ones are a 400).

    Raises:
        InvalidArgumentError: a wrong type, an unknown response_format, an invalid schema,
            or more than one of them.
    """
    given = {name: body[name] for name in ("response_format", "json_schema", "grammar")
             if body.get(name) is not None}  # fmt: skip
    if len(given) > 1:
        raise InvalidArgumentError(f"Give one of {', '.join(given)}, not several")
    fmt: Any = None
    response_format = checked(body, "response_format", "object")
    if response_format is not None:
        kind = response_format.get("type")
        if kind == "json_object":
            fmt = "json"
        elif kind == "json_schema":
            spec = checked(response_format, "json_schema", "object", required=True)
            fmt = checked(spec, "schema", "object", {"type": "object"})
        elif kind != "text":
            raise InvalidArgumentError(
                f"Invalid response_format type: {kind!r}", hint="text, json_object or json_schema"
            )
    if body.get("json_schema") is not None:
        fmt = checked(body, "json_schema", "object")
    grammar = checked(body, "grammar", "str")
    constraint(fmt, grammar)  # a 400 now, not in the reply
    return fmt, grammar


def ollama_format(body: Body) -> Any:
    """Ollama's ``format``: ``"json"`` or a JSON schema (``""`` or absent: free text).

    Raises:
        InvalidArgumentError: anything else, or an invalid schema.
    """
    value = body.get("format")
    if value is not None and not isinstance(value, str | dict):
        raise InvalidArgumentError(
            f"Invalid format: {value!r}", hint='use "json" or a JSON schema object'
        )
    constraint(value)  # a 400 now, not in the reply
    return value or None


def _max_tokens(body: Body, default: int) -> int:
    value = checked(body, "max_completion_tokens", "int")
    return checked(body, "max_tokens", "int", default) if value is None else value


def completion_request(body: Body) -> CompletionRequest:
    """Parse ``POST /v1/completions`` (one prompt string; ``stop`` a string or a list).

    Raises:
        InvalidArgumentError: bad model, prompt or options.
    """
    max_tokens = _max_tokens(body, 16)  # OpenAI's default for this endpoint
    temperature = checked(body, "temperature", "number", 1.0)
    check_options(temperature=temperature, max_tokens=max_tokens)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise InvalidArgumentError(
            "prompt must be a non-empty string", hint="one prompt per request"
        )
    options = checked(body, "stream_options", "object", {})
    fmt, grammar = output_format(body)
    return CompletionRequest(
        model=model_name(body),
        prompt=prompt,
        stream=checked(body, "stream", "bool", False),
        include_usage=checked(options, "include_usage", "bool", False),
        temperature=float(temperature),
        max_tokens=max_tokens,
        stop=check_stop(body.get("stop")),
        seed=checked(body, "seed", "int"),
        format=fmt,
        grammar=grammar,
    )


def chat_request(body: Body) -> ChatRequest:
    """Parse ``POST /v1/chat/completions``.

    Raises:
        InvalidArgumentError: bad model, messages or options.
    """
    max_tokens = _max_tokens(body, 512)
    temperature = checked(body, "temperature", "number", 0.7)
    check_options(temperature=temperature, max_tokens=max_tokens)
    options = checked(body, "stream_options", "object", {})
    fmt, grammar = output_format(body)
    return ChatRequest(
        model=model_name(body),
        messages=check_messages(body.get("messages")),
        stream=checked(body, "stream", "bool", False),
        include_usage=checked(options, "include_usage", "bool", False),
        temperature=float(temperature),
        max_tokens=max_tokens,
        seed=checked(body, "seed", "int"),
        template=check_override(checked(body, "template", "str")),
        format=fmt,
        grammar=grammar,
        **tool_fields(body),
    )


def benchmark_request(body: Body) -> dict[str, Any]:
    """Keyword arguments for :func:`offgrid_nb.bench.benchmark` (``model`` included).

    Raises:
        InvalidArgumentError: bad model or counts (the core checks the ranges).
    """
    return {
        "model": model_name(body),
        "prompt_tokens": checked(body, "prompt_tokens", "int", 512),
        "output_tokens": checked(body, "output_tokens", "int", 128),
        "iterations": checked(body, "iterations", "int"),  # 3, or 5 with llama_bench
        "warmup": checked(body, "warmup", "bool", True),
        "depth": checked(body, "depth", "int", 0),
        "llama_bench": checked(body, "llama_bench", "bool", False),
    }


def download_request(body: Body) -> tuple[str, str | None, str | None, int | None]:
    """``(repository, file_name, quantization, connections)`` of ``POST /v1/models/download``.

    Raises:
        InvalidArgumentError: missing repository, wrong types, both file_name and quantization,
            or connections out of range.
    """
    repository = checked(body, "repository", "str", required=True)
    file_name = checked(body, "file_name", "str")
    quantization = checked(body, "quantization", "str")
    if file_name is not None and quantization is not None:
        raise InvalidArgumentError("Give either file_name or quantization, not both")
    connections = checked(body, "connections", "int")
    if connections is not None:
        check_connections(connections)
    return repository, file_name, quantization, connections


@dataclass(frozen=True)
class RunRequest:
    """A checked ``POST /v1/perplexity`` or ``POST /v1/quality``.

    ``model``: a local model's name (perplexity), a Hub repo id or a list of local model names
    (quality). ``text`` is taken as it is, never as a file name.
    """

    kind: str
    model: str | list[str]
    text: LiteralText | None
    dataset: str | None
    n_ctx: int
    chunks: int | None
    quants: list[str] | None = None
    reference: str | None = None
    speed: bool = True

    def to_json(self) -> dict[str, Any]:
        """The parameters as a job shows them (the text by its length)."""
        shown: dict[str, Any] = {
            "model": self.model,
            "text_chars": None if self.text is None else len(self.text),
            "dataset": self.dataset,
            "n_ctx": self.n_ctx,
            "chunks": self.chunks,
        }
        if self.kind == "quality":
            shown.update(quants=self.quants, reference=self.reference, speed=self.speed)
        return shown


def _run_fields(body: Body, spec: dict[str, str]) -> dict[str, Any]:
    _check_known(set(body), set(spec))
    fields = {name: checked(body, name, kind) for name, kind in spec.items() if kind != "any"}
    n_ctx = 512 if fields["n_ctx"] is None else fields["n_ctx"]
    check_chunking(n_ctx, fields["chunks"])
    text = None if fields["text"] is None else LiteralText(fields["text"])
    check_source(text, fields["dataset"])
    return {**fields, "n_ctx": n_ctx, "text": text}


def perplexity_request(body: Body) -> RunRequest:
    """Parse ``POST /v1/perplexity`` (``model`` a local model's name).

    Raises:
        InvalidArgumentError: unknown fields, wrong types, a missing or unsafe model, n_ctx < 16,
            chunks < 1, an empty text, both text and dataset.
        NotFoundError: an unknown dataset.
    """
    fields = _run_fields(body, PERPLEXITY_FIELDS)
    return RunRequest(
        "perplexity", model_name(body), fields["text"], fields["dataset"], fields["n_ctx"],
        fields["chunks"],
    )  # fmt: skip


def quality_request(body: Body) -> RunRequest:
    """Parse ``POST /v1/quality`` (``model`` a Hub repo id, or a list of local model names;
    ``quants``, ``reference`` a quant or a local model's name, ``speed`` default true).

    Raises:
        InvalidArgumentError: as :func:`perplexity_request`, and a bad repo id, an empty model
            list, an unsafe name, a quant that is no quantization.
        NotFoundError: an unknown dataset.
    """
    fields = _run_fields(body, QUALITY_FIELDS)
    model = body.get("model")
    if isinstance(model, str):
        check_repo_id(model)
    elif isinstance(model, list) and model and all(isinstance(m, str) for m in model):
        model = [safe_model_name(m) for m in model]
    else:
        raise InvalidArgumentError(
            f"Invalid model: {model!r} (must be a Hub repo id or a list of local model names)",
            hint='e.g. "owner/repo-GGUF" or ["model-Q8_0", "model-Q4_K_M"]',
        )
    reference = fields["reference"]
    return RunRequest(
        "quality", model, fields["text"], fields["dataset"], fields["n_ctx"], fields["chunks"],
        check_quants(fields["quants"]), None if reference is None else safe_model_name(reference),
        fields["speed"] is not False,
    )  # fmt: skip
