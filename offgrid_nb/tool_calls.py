"""Tool calls: the tools a reply may call, the call format a template speaks, the prompt and
grammar for it, and the reply parsed back into calls.

The format is read off the chat template, as llama.cpp's server does (common/chat.cpp):

- ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Hermes, Qwen 2.5+);
- ``llama3``: ``{"name": ..., "parameters": {...}}``, maybe after ``<|python_tag|>``;
- ``mistral``: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]``;
- ``generic``: any other template (gemma's included, and llama.cpp's built-in ones): the tools
  are described in the system turn and the reply is constrained by a grammar to a JSON object,
  ``{"tool_calls": [{"name", "arguments"}]}`` or ``{"response": "..."}`` (llama.cpp's "generic"
  format).

Templates that know tools get them (``tools=`` in the Jinja context, as Hugging Face and
llama.cpp pass them) and the conversation's tool calls and results as they are; for the others
calls and results become text in assistant and user turns (consecutive turns of one role
merged, so templates that want user/assistant turns alternating accept them).

``tool_choice``: ``auto`` (the model decides; generic: the grammar allows a call or a reply),
``none`` (no tools), ``required`` or a named function (the grammar forces a call, of it).
"""

from __future__ import annotations

import inspect
import json
import re
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgumentError
from .structured import schema_grammar

Message = dict[str, Any]
HERMES, LLAMA3, MISTRAL, GENERIC = "hermes", "llama3", "mistral", "generic"
MAX_PARALLEL_CALLS = 8  # the most calls one reply makes


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, description and JSON schema of arguments;
    ``function`` is the Python callable when the tool was given as one."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    function: Callable[..., Any] | None = None

    def spec(self) -> dict[str, Any]:
        """OpenAI's ``{"type": "function", "function": {...}}`` shape (what templates read)."""
        function = {"name": self.name, "description": self.description}
        return {"type": "function", "function": {**function, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolCall:
    """One call in a reply: ``id``, the function's ``name``, its ``arguments`` (an object)."""

    id: str
    name: str
    arguments: dict[str, Any]

    def message_part(self) -> dict[str, Any]:
        """The call as messages carry it (arguments an object, as templates read them)."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}  # fmt: skip


def _function_tool(function: Callable[..., Any]) -> Tool:
    """A Python function as a tool: its signature's JSON schema (pydantic), its docstring."""
    import pydantic

    fields: dict[str, Any] = {}
    hints = typing.get_type_hints(function)  # resolves string annotations
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = hints.get(name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    schema = pydantic.create_model(function.__name__, **fields).model_json_schema()
    schema.pop("title", None)
    for value in schema.get("properties", {}).values():
        value.pop("title", None)
    doc = inspect.getdoc(function) or ""
    return Tool(function.__name__, doc.split("\n\n")[0], schema, function)


def check_tools(tools: Any) -> list[Tool]:
    """Tools as given: OpenAI's ``{"type": "function", "function": {name, description,
    parameters}}``, the bare ``{name, ...}``, or Python functions.

    Raises:
        InvalidArgumentError: not a list, a tool without a name, bad parameters.
    """
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidArgumentError(f"Invalid tools: {tools!r} (must be a list)")
    found: list[Tool] = []
    for tool in tools:
        if callable(tool) and not isinstance(tool, dict):
            found.append(_function_tool(tool))
            continue
        spec = tool.get("function", tool) if isinstance(tool, dict) else None
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(
                f"Invalid tool: {tool!r}", hint='each tool needs {"function": {"name": ...}}'
            )
        parameters = spec.get("parameters") or {"type": "object"}
        if not isinstance(parameters, dict):
            raise InvalidArgumentError(f"Invalid parameters of tool {name}: {parameters!r}")
        found.append(Tool(name, str(spec.get("description") or ""), parameters))
    return found


def check_tool_choice(choice: Any, tools: list[Tool]) -> tuple[str, str | None]:
    """``(mode, name)``: ``auto``, ``none``, ``required``, or ``("required", name)`` for
    ``{"type": "function", "function": {"name"}}``.

    Raises:
        InvalidArgumentError: an unknown mode, or a function that is not among the tools.
    """
    if choice is None:
        return "auto", None
    if choice in ("auto", "none", "required"):
        return choice, None
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"Invalid tool_choice: {choice!r}",
            hint='auto, none, required or {"type": "function", "function": {"name": ...}}',
        )
    if name not in {tool.name for tool in tools}:
        raise InvalidArgumentError(f"tool_choice names an unknown function: {name}")
    return "required", name


def call_format(jinja: str | None) -> str:
    """The call format a chat template speaks (see the module docstring)."""
    text = jinja or ""
    if "tools" not in text:
        return GENERIC
    if "<tool_call>" in text:
        return HERMES
    if "[TOOL_CALLS]" in text:
        return MISTRAL
    if "<|python_tag|>" in text or "ipython" in text:
        return LLAMA3
    return GENERIC


def _arguments(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value or "{}")
        except ValueError:
            raise InvalidArgumentError(f"{where}: arguments are not JSON: {value!r}") from None
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{where}: arguments must be a JSON object")
    return value


def check_messages(messages: Any, roles: tuple[str, ...]) -> list[Message]:
    """Messages with text content, and the tool turns: an assistant message with
    ``tool_calls`` (its ``content`` may be null), then ``role: "tool"`` results naming the
    call by ``tool_call_id`` (OpenAI) or the function by ``tool_name``/``name`` (Ollama).

    Returns:
        ``{"role", "content"}`` messages; an assistant's calls as ``tool_calls`` (ids given
        where the client sent none, arguments objects); a tool result with ``tool_call_id``
        and ``name``.

    Raises:
        InvalidArgumentError: a bad message, or a tool result naming no earlier call.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidArgumentError("messages must be a non-empty list of {role, content}")
    checked: list[Message] = []
    calls: dict[str, str] = {}  # id -> function name, of the calls so far
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        tool_calls = message.get("tool_calls") if role == "assistant" else None
        if content is None and (tool_calls or role == "tool"):
            content = ""
        if role not in (*roles, "tool") or not isinstance(content, str):
            raise InvalidArgumentError(
                f"Invalid message: {message!r}",
                hint=f"each message needs a role ({', '.join((*roles, 'tool'))}) and text content",
            )
        entry: Message = {"role": role, "content": content}
        if tool_calls:
            entry["tool_calls"] = _message_calls(tool_calls, i)
            calls.update({c["id"]: c["function"]["name"] for c in entry["tool_calls"]})
        if role == "tool":
            entry.update(_tool_result(message, calls))
        checked.append(entry)
    return checked


def _message_calls(tool_calls: Any, index: int) -> list[dict[str, Any]]:
    if not isinstance(tool_calls, list):
        raise InvalidArgumentError(f"Invalid tool_calls: {tool_calls!r} (must be a list)")
    parts = []
    for j, call in enumerate(tool_calls):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"Invalid tool call: {call!r} (needs function.name)")
        call_id = call.get("id") or f"call_{index}_{j}"
        arguments = _arguments(function.get("arguments"), f"tool call {name}")
        parts.append(ToolCall(str(call_id), name, arguments).message_part())
    return parts


def _tool_result(message: Message, calls: dict[str, str]) -> dict[str, str]:
    call_id = message.get("tool_call_id")
    if call_id is not None:
        if call_id not in calls:
            raise InvalidArgumentError(
                f"A tool message names an unknown tool_call_id: {call_id!r}",
                hint="give the id of a call in an earlier assistant message",
            )
        return {"tool_call_id": call_id, "name": calls[call_id]}
    name = message.get("tool_name") or message.get("name")
    matching = [i for i, n in calls.items() if n == name]
    if not matching:
        raise InvalidArgumentError(
            f"A tool message names no earlier call: {message!r}",
            hint="give tool_call_id (or Ollama's tool_name) of a call the assistant made",
        )
    return {"tool_call_id": matching[-1], "name": str(name)}


_GENERIC_PROMPT = (
    "You can call these tools (JSON schemas of their arguments):\n{tools}\n\n"
    'Answer with one JSON object: {{"tool_calls": [{{"name": ..., "arguments": {{...}}}}]}} '
    'to call tools, or {{"response": "..."}} to answer.'
)


@dataclass(frozen=True)
class ToolPlan:
    """How one reply handles tools: the format, the tools offered, the choice."""

    format: str
    tools: tuple[Tool, ...] = ()
    mode: str = "auto"  # auto, none or required
    name: str | None = None  # the function a required call must be
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the reply may call tools."""
        return bool(self.tools) and self.mode != "none"

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The ``tools`` of the Jinja context (templates that know tools only)."""
        return [t.spec() for t in self.tools] if self.active and self.format != GENERIC else None

    def messages(self, messages: list[Message]) -> list[Message]:
        """The conversation as the template gets it: as is when the template knows tools;
        else calls and results as text, the tools in the system turn, turns of one role
        merged (templates that want roles alternating accept them)."""
        if self.format != GENERIC:
            return messages
        plain: list[Message] = []
        converted = False  # whether the last turn in plain holds a call or a result
        for message in messages:
            role, content = message["role"], message["content"]
            was, converted = converted, bool(message.get("tool_calls")) or role == "tool"
            if message.get("tool_calls"):
                calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"],
                          "id": c["id"]} for c in message["tool_calls"]]  # fmt: skip
                content = json.dumps({"tool_calls": calls})
            elif role == "tool":
                role = "user"
                result = {"id": message["tool_call_id"], "tool": message["name"], "result": content}
                content = json.dumps({"tool_response": result})
            elif role == "assistant" and self.active:
                content = json.dumps({"response": content})  # as the grammar has it answer
            if plain and plain[-1]["role"] == role and (was or converted):  # others: as sent
                plain[-1] = {"role": role, "content": plain[-1]["content"] + "\n\n" + content}
            else:
                plain.append({"role": role, "content": content})
        if self.active:
            described = json.dumps([t.spec()["function"] for t in self.tools], indent=2)
            prompt = _GENERIC_PROMPT.format(tools=described)
            if plain[0]["role"] == "system":
                plain[0] = {"role": "system", "content": plain[0]["content"] + "\n\n" + prompt}
            else:
                plain.insert(0, {"role": "system", "content": prompt})
        return plain

    def grammar(self) -> str | None:
        """GBNF for the reply: generic always; other formats when a call is required."""
        if not self.active or (self.format != GENERIC and self.mode != "required"):
            return None
        tools = [t for t in self.tools if self.name in (None, t.name)]
        key = "parameters" if self.format == LLAMA3 else "arguments"
        one = {"anyOf": [{"type": "object", "properties": {"name": {"const": t.name},
               key: t.parameters}, "required": ["name", key]} for t in tools]}  # fmt: skip
        # a named choice is one call of it (OpenAI's meaning); parallel calls are bounded so
        # that a small model repeating itself stops
        most = 1 if not self.parallel or self.name else MAX_PARALLEL_CALLS
        many = {"type": "array", "items": one, "minItems": 1, "maxItems": most}
        if self.format == GENERIC:
            calls = {"type": "object", "properties": {"tool_calls": many},
                     "required": ["tool_calls"]}  # fmt: skip
            reply = {"type": "object", "properties": {"response": {"type": "string"}},
                     "required": ["response"]}  # fmt: skip
            return schema_grammar(calls if self.mode == "required" else {"anyOf": [calls, reply]})
        if self.format == MISTRAL:
            return _wrapped(schema_grammar(many), '"[TOOL_CALLS]" call')
        if self.format == HERMES:
            repeat = "" if not self.parallel or self.name else f"{{1,{MAX_PARALLEL_CALLS}}}"
            hermes = f'("<tool_call>" space call "</tool_call>" space){repeat}'
            return _wrapped(schema_grammar(one), hermes)
        return _wrapped(schema_grammar(one), "call")  # llama3: one call

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """``(content, calls)`` of a reply's text (no calls when it has none)."""
        if not self.active:
            return text, []
        found: list[Any] = []
        content = text
        if self.format == GENERIC:
            value = _json(text)
            if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
                found, content = value["tool_calls"], ""
            elif isinstance(value, dict) and isinstance(value.get("response"), str):
                content = value["response"]
            elif value is None and '"tool_calls"' in text:  # cut by max_tokens
                found, content = _whole_calls(text), ""
        elif self.format == HERMES:
            pattern = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
            found = [_json(m) for m in pattern.findall(text)]
            content = pattern.sub("", text).strip()
        elif self.format == MISTRAL and "[TOOL_CALLS]" in text:
            head, _, tail = text.partition("[TOOL_CALLS]")
            value = _json(tail)
            found = value if isinstance(value, list) else _whole_calls(tail)
            content = head.strip()
        elif self.format == LLAMA3:
            value = _json(text.replace("<|python_tag|>", ""))
            if isinstance(value, dict) and "name" in value:
                found, content = [value], ""
        calls: list[ToolCall] = []
        for value in found:
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                continue
            arguments = value.get("arguments", value.get("parameters", {}))
            if isinstance(arguments, str):
                arguments = _json(arguments)
            repeated = any((c.name, c.arguments) == (value["name"], arguments) for c in calls)
            if isinstance(arguments, dict) and not repeated:  # a small model repeats itself
                calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", value["name"], arguments))
        return content, calls


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _whole_calls(text: str) -> list[Any]:
    """The complete ``{"name": ...}`` objects in a reply cut short (the last one unfinished)."""
    decoder, found = json.JSONDecoder(), []
    for match in re.finditer(r'\{\s*"name"', text):
        try:
            found.append(decoder.raw_decode(text, match.start())[0])
        except ValueError:
            continue
    return found


def _wrapped(grammar: str, root: str) -> str:
    """A schema's grammar with its root renamed ``call``, under a new ``root ::= {root}``."""
    lines = grammar.splitlines()
    renamed = [("call ::= " + line[len("root ::= "):]) if line.startswith("root ::= ") else line
               for line in lines]  # fmt: skip
    return "\n".join([f"root ::= {root}", *renamed])


def plan(
    jinja: str | None, tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = True
) -> ToolPlan:
    """The :class:`ToolPlan` of a reply for a template (its Jinja text, ``None`` for
    llama.cpp's built-in ones).

    Raises:
        InvalidArgumentError: bad tools or tool_choice.
    """
    checked = check_tools(tools)
    mode, name = check_tool_choice(tool_choice, checked)
    if mode == "required" and not checked:
        raise InvalidArgumentError("tool_choice requires a call, but no tools were given")
    if not isinstance(parallel_tool_calls, bool):
        raise InvalidArgumentError(f"Invalid parallel_tool_calls: {parallel_tool_calls!r}")
    return ToolPlan(call_format(jinja), tuple(checked), mode, name, parallel_tool_calls)
