"""Chat with a local model: :func:`complete` for one reply, :class:`Chat` for a conversation.

Each turn renders the whole conversation with the model's chat template (chosen by
:mod:`offgrid_nb.chat_template`; a base model's text is continued instead). Replies are
decoded by :mod:`offgrid_nb.batching`, several at once when ``parallel`` > 1; a slot keeps the
tokens of its last reply in its KV cache and a conversation's next turn goes to the slot that
shares its prefix, so a later turn costs its new tokens, not the whole conversation.
When a conversation would overflow the context window, :class:`Chat` drops the oldest turns;
the system prompt is always kept. :func:`generate` continues a plain text prompt, exactly as
llama-cpp-python's ``Llama.create_completion`` does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, overload

from .batching import Job, Prompt, run
from .chat_template import ChatFormat, TemplateChoice, check_override, template_for_file
from .download import ProgressCallback, pull_model
from .engine import LoadedModel, load_model, share_model
from .errors import ContextOverflowError, InvalidArgumentError
from .structured import Constraint, check_grammar, constraint
from .tool_calls import ToolCall, ToolPlan, plan
from .tool_calls import check_messages as check_tool_messages

Message = dict[str, Any]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Usage:
    """Token counts and speed of one reply."""

    prompt_tokens: int  # the whole rendered conversation
    prompt_tokens_evaluated: int  # what llama.cpp actually evaluated (the rest was cached)
    completion_tokens: int
    time_to_first_token_ms: float
    tokens_per_second: float  # generation speed of its slot (first to last token)
    prompt_eval_ms: float = 0.0  # from submission to the first token (queue wait included)
    eval_ms: float = 0.0  # from the first token to the last


def _check_number(name: str, value: Any, low: float, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise InvalidArgumentError(f"Invalid {name}: {value!r} (must be >= {low})")
    if high is not None and value > high:
        raise InvalidArgumentError(f"Invalid {name}: {value!r} (must be <= {high})")


def check_options(*, temperature: Any, max_tokens: Any, n_ctx: Any = None) -> None:
    """Validate sampling options (shared by :class:`Chat`, :func:`complete` and the server)."""
    _check_number("temperature", temperature, 0.0, 2.0)
    _check_number("max_tokens", max_tokens, 1)
    if n_ctx is not None:
        _check_number("n_ctx", n_ctx, 16)


def check_messages(messages: Any) -> list[Message]:
    """Messages as ``[{"role", "content"}]`` with known roles and text content, and tool
    turns (see :func:`offgrid_nb.tool_calls.check_messages`)."""
    return check_tool_messages(messages, ROLES)


class Reply:
    """One reply being generated: iterate it for text pieces; ``close()`` stops it.

    After iteration, ``text``, ``usage`` and ``finish_reason`` (``"stop"``, ``"length"`` or
    ``"cancelled"``) describe it. Replies are decoded by the loaded model's scheduler
    (:mod:`offgrid_nb.batching`): up to ``parallel`` together, the others wait for a slot;
    benchmarks and model swaps in other threads wait for the running replies.
    """

    def __init__(
        self,
        model: _ModelRef,
        prompt: Prompt,
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        stop_at_control: bool = True,
        constraint: Constraint | None = None,
        tools: ToolPlan | None = None,
    ) -> None:
        self.text = ""
        self.content = ""  # the text without tool calls
        self.tool_calls: list[ToolCall] = []
        self.usage: Usage | None = None
        self.finish_reason = "cancelled"
        self.constraint = constraint
        self.tools = tools
        self._model = model
        grammar = constraint.grammar if constraint else None
        self._job = Job(prompt, max_tokens, temperature, seed, stop_at_control, grammar)
        self._pieces = self._generate()

    @property
    def parsed(self) -> Any:
        """The reply's value under ``format=``: the pydantic instance, or the parsed JSON
        (``None`` without a JSON format).

        Raises:
            InvalidArgumentError: the reply was cut before its JSON was complete.
        """
        return self.constraint.parse(self.text) if self.constraint else None

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        """Stop generating (the text so far is kept); the slot is free at the next step."""
        self.cancel()
        self._pieces.close()

    @property
    def model(self) -> str | Path:
        """The model it is generated with, as it was given (a name, or its file)."""
        return self._model.model

    def cancel(self) -> None:
        """Stop generating, from any thread: a reply waiting for a slot leaves the queue at
        once; a running one ends at the scheduler's next step."""
        self._job.cancel()

    def _generate(self) -> Iterator[str]:
        pieces: list[str] = []
        job = self._job
        try:
            for piece in run(self._model.load, job):
                pieces.append(piece)
                yield piece
        finally:
            self.text = "".join(pieces)
            self.content, self.tool_calls = (
                self.tools.parse(self.text) if self.tools else (self.text, [])
            )
            self.finish_reason = job.finish_reason
            first, last = job.first_token, job.last_token
            self.usage = Usage(
                prompt_tokens=job.prompt_tokens,
                prompt_tokens_evaluated=job.prompt_tokens_evaluated,
                completion_tokens=job.completion_tokens,
                time_to_first_token_ms=((first or time.perf_counter()) - job.submitted) * 1000
                if job.submitted
                else 0.0,
                # the slot's own pace (text pieces can lag tokens: a piece waits for a
                # complete UTF-8 character or a possible stop string)
                tokens_per_second=(job.completion_tokens - 1) / (last - first)
                if first and last and last > first
                else 0.0,
                prompt_eval_ms=(first - job.submitted) * 1000 if first and job.submitted else 0.0,
                eval_ms=(last - first) * 1000 if first and last else 0.0,
            )


class ReplyText(str):
    """A whole reply's text (a ``str``; without its tool calls) that also carries its
    :class:`Reply`: ``parsed`` and ``tool_calls``."""

    reply: Reply | None

    def __new__(cls, text: str, reply: Reply | None) -> ReplyText:
        value = super().__new__(cls, text)
        value.reply = reply
        return value

    @property
    def parsed(self) -> Any:
        """The value under ``format=`` (see :attr:`Reply.parsed`)."""
        return self.reply.parsed if self.reply else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The calls the reply made (see :attr:`Reply.tool_calls`)."""
        return self.reply.tool_calls if self.reply else []


@dataclass(frozen=True)
class _ModelRef:
    """What to load for a reply: the model (a name or its file), the context, threads, slots."""

    model: str | Path
    n_ctx: int | None
    n_threads: int | None
    parallel: int | None = None

    def load(self) -> LoadedModel:
        """The model, loaded (or reused) with these options."""
        return load_model(self.model, **self._options())

    def share(self) -> AbstractContextManager[LoadedModel]:
        """The model, held beside running replies (see :func:`engine.share_model`)."""
        return share_model(self.model, **self._options())

    def on(self, path: Path) -> _ModelRef:
        """The same options on a resolved file (no library scan per reply)."""
        return _ModelRef(path, self.n_ctx, self.n_threads, self.parallel)

    def _options(self) -> dict[str, int | None]:
        return {"n_ctx": self.n_ctx, "n_threads": self.n_threads, "parallel": self.parallel}


def _chat_prompt(fmt: ChatFormat, messages: list[Message], tools: ToolPlan | None = None) -> Prompt:
    """The prompt of a chat reply: the conversation rendered with ``fmt`` (tool turns as
    ``tools`` says), tokenized."""
    tools = tools or plan(fmt.choice.jinja, None)

    def prompt(loaded: LoadedModel) -> tuple[list[int], list[str]]:
        rendered = fmt.render(tools.messages(messages), tools.template_tools())
        return _tokens(loaded, rendered.text, add_bos=rendered.add_bos), list(rendered.stop)

    return prompt


def _tokens(loaded: LoadedModel, text: str, *, add_bos: bool) -> list[int]:
    """``text`` tokenized as llama-cpp-python tokenizes prompts (special tokens parsed)."""
    return loaded.tokenize(text, add_bos=add_bos, special=True)


def chat_format(loaded: LoadedModel, template: str | None = None) -> ChatFormat:
    """The chat format of a loaded model (see :mod:`offgrid_nb.chat_template`)."""
    return ChatFormat(loaded.llama, template_choice(loaded, template), loaded.name)


def template_choice(loaded: LoadedModel, template: str | None = None) -> TemplateChoice:
    """Which template a loaded model gets (the file's folder names its repo)."""
    return template_for_file(loaded.info, loaded.path, template)


def _reply_room(n_ctx: int, max_tokens: int) -> int:
    """Tokens kept free for the reply: ``max_tokens``, but at most a quarter of the context."""
    return max(1, min(max_tokens, n_ctx // 4))


def _overflow(n_tokens: int, n_ctx: int) -> ContextOverflowError:
    return ContextOverflowError(
        f"The conversation is too long: {n_tokens} tokens with a context of {n_ctx}",
        hint="shorten it, or use a larger context (n_ctx / --ctx)",
    )


def complete(
    model: str | Path,
    messages: list[Message],
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    temperature: float = 0.7,
    max_tokens: int = 512,
    seed: int | None = None,
    template: str | None = None,
    parallel: int | None = None,
    format: Any = None,
    grammar: str | None = None,
    tools: list[Any] | None = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool = True,
) -> Reply:
    """Start one reply to ``messages`` (stateless, as an OpenAI chat completion).

    Args:
        model: a library name or a path.
        messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
        n_ctx: context window (default: the model's, capped by the settings).
        n_threads: CPU threads (default: physical cores).
        temperature: sampling temperature (0 = greedy).
        max_tokens: the longest reply, in tokens.
        seed: a sampling seed for reproducible replies.
        template: a chat template override: a llama.cpp built-in name, ``"none"`` or Jinja.
        parallel: replies the model decodes together (default: the ``parallel`` setting).
        format: ``"json"``, a JSON schema or a pydantic model class: the reply is
            constrained to it (see :mod:`offgrid_nb.structured`); ``Reply.parsed`` reads it.
        grammar: GBNF the reply must match (instead of ``format``).
        tools: functions the reply may call: OpenAI's tool specs or Python functions
            (``Reply.tool_calls`` has the calls; see :mod:`offgrid_nb.tool_calls`).
        tool_choice: ``"auto"``, ``"none"``, ``"required"`` or
            ``{"type": "function", "function": {"name": ...}}``.
        parallel_tool_calls: whether a reply may make several calls.

    Returns:
        A :class:`Reply`; iterate it to generate.

    Raises:
        InvalidArgumentError: bad messages or options, the template refused them, or a
            bad format or grammar.
        ContextOverflowError: the messages leave no room for a reply in the context.
    """
    check_options(temperature=temperature, max_tokens=max_tokens, n_ctx=n_ctx)
    check_override(template)
    messages = check_messages(messages)
    wanted = constraint(format, grammar)
    ref = _ModelRef(model, n_ctx, n_threads, parallel)
    with ref.share() as loaded:  # fail now, not at the first piece
        fmt = chat_format(loaded, template)
        calls = plan(fmt.choice.jinja, tools, tool_choice, parallel_tool_calls)
        wanted = _with_tools(wanted, calls)
        prompt = _chat_prompt(fmt, messages, calls)
        tokens, _ = prompt(loaded)
        if len(tokens) + _reply_room(loaded.n_ctx, max_tokens) > loaded.n_ctx:
            raise _overflow(len(tokens), loaded.n_ctx)
        _check_constraint(loaded, wanted)
    return Reply(
        ref.on(loaded.path),
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        constraint=wanted,
        tools=calls,
    )


def _with_tools(wanted: Constraint | None, tools: ToolPlan) -> Constraint | None:
    """The reply's constraint: the tool-call grammar when the plan has one."""
    grammar = tools.grammar()
    if grammar is None:
        return wanted
    if wanted is not None:
        raise InvalidArgumentError("Give either a format or tools that must be called, not both")
    return Constraint(grammar, json=False)


def _check_constraint(loaded: LoadedModel, wanted: Constraint | None) -> None:
    """Fail now (a 400) when llama.cpp cannot parse the grammar, not in the scheduler."""
    if wanted is not None:
        check_grammar(loaded.llama._model.vocab, wanted.grammar)


@overload
def generate(
    model: str | Path,
    prompt: str,
    *,
    stream: Literal[False] = False,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    temperature: float = 0.7,
    max_tokens: int = 512,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    parallel: int | None = None,
    format: Any = None,
    grammar: str | None = None,
) -> str: ...


@overload
def generate(
    model: str | Path,
    prompt: str,
    *,
    stream: Literal[True],
    n_ctx: int | None = None,
    n_threads: int | None = None,
    temperature: float = 0.7,
    max_tokens: int = 512,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    parallel: int | None = None,
    format: Any = None,
    grammar: str | None = None,
) -> Reply: ...


def generate(
    model: str | Path,
    prompt: str,
    *,
    stream: bool = False,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    temperature: float = 0.7,
    max_tokens: int = 512,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    parallel: int | None = None,
    format: Any = None,
    grammar: str | None = None,
) -> str | Reply:
    """Continue ``prompt`` (no chat template), as ``Llama.create_completion`` does.

    Args:
        model: a library name or a path.
        prompt: the text to continue.
        stream: return a :class:`Reply` to iterate (pieces as they come) instead of the text.
        n_ctx: context window (default: the model's, capped by the settings).
        n_threads: CPU threads (default: physical cores).
        temperature: sampling temperature (0 = greedy).
        max_tokens: the longest continuation, in tokens.
        stop: strings that end the text (not included in it).
        seed: a sampling seed for reproducible text.
        parallel: replies the model decodes together (default: the ``parallel`` setting).
        format: ``"json"``, a JSON schema or a pydantic model class the text must match.
        grammar: GBNF the text must match (instead of ``format``).

    Returns:
        The generated text, or with ``stream=True`` a :class:`Reply`.

    Raises:
        InvalidArgumentError: an empty prompt, bad options.
        ContextOverflowError: the prompt leaves no room in the context.
    """
    check_options(temperature=temperature, max_tokens=max_tokens, n_ctx=n_ctx)
    if not isinstance(prompt, str) or not prompt:
        raise InvalidArgumentError("Empty prompt", hint="give some text to continue")
    stops = check_stop(stop)
    wanted = constraint(format, grammar)

    def tokens(loaded: LoadedModel) -> tuple[list[int], list[str]]:
        return _tokens(loaded, prompt, add_bos=True), stops

    ref = _ModelRef(model, n_ctx, n_threads, parallel)
    with ref.share() as loaded:
        count = len(tokens(loaded)[0])
        if count >= loaded.n_ctx:
            raise _overflow(count, loaded.n_ctx)
        _check_constraint(loaded, wanted)
    reply = Reply(
        ref.on(loaded.path),
        tokens,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        stop_at_control=False,  # exactly what create_completion gives
        constraint=wanted,
    )
    if stream:
        return reply
    return ReplyText("".join(reply), reply)


def check_stop(stop: Any) -> list[str]:
    """Stop strings as a list: ``None``, a string or a list of non-empty strings."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops):
        raise InvalidArgumentError(f"Invalid stop: {stop!r} (a string or a list of strings)")
    return stops


class Chat:
    """A conversation with a local GGUF model.

    Args:
        model: a library name (see :func:`offgrid_nb.library.find_model`), a path, or a Hub
            reference (``owner/repo:Q4_K_M``, ``hf.co/owner/repo:Q4_K_M``, ``owner/repo``),
            downloaded first when it is not here yet (:func:`offgrid_nb.download.pull_model`).
        system: an optional system prompt, kept when old turns are dropped.
        n_ctx: context window in tokens (default: the model's, capped by the settings).
        n_threads: CPU threads (default: physical cores).
        temperature: sampling temperature (0 = greedy).
        max_tokens: the longest reply, in tokens.
        seed: a sampling seed for reproducible replies.
        template: a chat template override: a llama.cpp built-in name (``"gemma"``,
            ``"llama2"``...), ``"none"`` (continue the text, as for a base model) or Jinja.
        progress: called with :class:`offgrid_nb.download.DownloadProgress` events while a
            Hub model is downloaded.
        tools: functions the model may call: Python functions (their signature and docstring
            describe them) or OpenAI tool specs; a reply's calls are ``reply.tool_calls``.
        tool_choice: ``"auto"``, ``"none"``, ``"required"`` or a named function (see
            :func:`complete`).
        run_tools: call the Python functions the model asks for, give it their results, and
            repeat until it answers (at most ``max_tool_rounds`` rounds): an agent loop.
        max_tool_rounds: the most calls-and-results rounds of one :meth:`send`.

    ``template_choice`` says which template the model got (see
    :mod:`offgrid_nb.chat_template`); when it is a base model, replies continue the text.

    Example:
        >>> chat = Chat("qwen2.5-0.5b-instruct-q4_k_m", system="Be brief.")
        >>> for piece in chat.stream("Hello!"):
        ...     print(piece, end="")
    """

    def __init__(
        self,
        model: str | Path,
        *,
        system: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        temperature: float = 0.7,
        max_tokens: int = 512,
        seed: int | None = None,
        template: str | None = None,
        progress: ProgressCallback | None = None,
        parallel: int | None = None,
        tools: list[Any] | None = None,
        tool_choice: Any = None,
        run_tools: bool = False,
        max_tool_rounds: int = 8,
    ) -> None:
        check_options(temperature=temperature, max_tokens=max_tokens, n_ctx=n_ctx)
        check_override(template)
        path = pull_model(model, progress=progress)
        self.model = model
        self.system = system
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self.usage: Usage | None = None
        self.dropped_turns = 0
        self.last_reply: Reply | None = None
        self._messages: list[Message] = []
        ref = _ModelRef(path, n_ctx, n_threads, parallel)
        with ref.share() as loaded:  # fail now, not at a message
            self._format = chat_format(loaded, template)
        self._tools = plan(self._format.choice.jinja, tools, tool_choice)
        self.run_tools = run_tools
        self.max_tool_rounds = max_tool_rounds
        self.template_choice = self._format.choice
        self._model = ref.on(loaded.path)

    @property
    def history(self) -> list[Message]:
        """The conversation so far (system prompt first, when there is one)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self._messages]

    def clear(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self._messages.clear()
        self.usage = None
        self.dropped_turns = 0

    def send(self, text: str, *, format: Any = None, grammar: str | None = None) -> ReplyText:
        """Send a message and return the whole reply (a ``str``; under ``format=``, its
        ``.parsed`` is the value: the pydantic instance, or the parsed JSON).

        Args:
            text: the message.
            format: ``"json"``, a JSON schema or a pydantic model class the reply must match.
            grammar: GBNF the reply must match (instead of ``format``).
        """
        for _ in self.stream(text, format=format, grammar=grammar):
            pass
        for _ in range(self.max_tool_rounds if self.run_tools else 0):
            reply = self.last_reply
            if reply is None or not reply.tool_calls:
                break
            for call in reply.tool_calls:
                self.add_tool_result(call.id, self._run_tool(call))
            # after the results, the model may answer: a required call is asked for once
            for _ in self._reply(None, replace(self._tools, mode="auto", name=None)):
                pass
        last = self.last_reply
        return ReplyText(last.content if last else "", last)

    def add_tool_result(self, call_id: str, content: Any) -> None:
        """Give the model the result of one of its calls (``reply.tool_calls[i].id``); the
        next :meth:`send` (or ``run_tools``) sends it. ``content`` that is not text is JSON."""
        names = {c["id"]: c["function"]["name"] for m in self._messages
                 for c in m.get("tool_calls", ())}  # fmt: skip
        if call_id not in names:
            raise InvalidArgumentError(f"No tool call with id {call_id!r} in this chat")
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        self._messages.append(
            {"role": "tool", "content": text, "tool_call_id": call_id, "name": names[call_id]}
        )

    def _run_tool(self, call: ToolCall) -> Any:
        """A call's result: the Python function's return value, or its error as text (the
        model reads it and may try again)."""
        tool = next((t for t in self._tools.tools if t.name == call.name), None)
        if tool is None or tool.function is None:
            return f"error: no Python function {call.name}"
        try:
            return tool.function(**call.arguments)
        except Exception as exc:  # the model's arguments may be wrong: it is told so
            return f"error: {type(exc).__name__}: {exc}"

    def _fit(self, loaded: LoadedModel) -> None:
        """Drop the oldest turns until the conversation leaves the reply room."""
        room = _reply_room(loaded.n_ctx, self.max_tokens)
        while True:
            tokens, _ = _chat_prompt(self._format, self.history, self._tools)(loaded)
            if len(tokens) + room <= loaded.n_ctx:
                return
            if len(self._messages) <= 1:  # only the new message is left: it is too long
                self._messages.pop()
                raise _overflow(len(tokens), loaded.n_ctx)
            self._messages.pop(0)  # the oldest turn; the system prompt is not in the list
            while self._messages and self._messages[0]["role"] in ("assistant", "tool"):
                self._messages.pop(0)
            self.dropped_turns += 1

    def stream(self, text: str, *, format: Any = None, grammar: str | None = None) -> Iterator[str]:
        """Send a message; yield the reply in pieces as llama.cpp generates them.

        Closing the iterator early (Stop, Ctrl+C) stops generation; the partial reply is kept
        in the history so the conversation stays consistent. ``format`` and ``grammar`` are
        :meth:`send`'s; ``last_reply`` is the :class:`Reply`.
        """
        if not isinstance(text, str) or not text.strip():
            raise InvalidArgumentError("Empty message", hint="type something to send")
        wanted = constraint(format, grammar)
        self._messages.append({"role": "user", "content": text})
        return self._reply(wanted)

    def _reply(self, wanted: Constraint | None, tools: ToolPlan | None = None) -> Iterator[str]:
        """The reply to the conversation so far (its last message a user's or a tool's)."""
        tools = tools or self._tools
        last = self._messages[-1]
        try:
            wanted = _with_tools(wanted, tools)
            with self._model.share() as loaded:
                self._fit(loaded)  # drop old turns now; the reply re-renders what is left
                _check_constraint(loaded, wanted)
        except InvalidArgumentError:  # e.g. the template refused it: the message is not sent
            if self._messages and self._messages[-1] is last and last["role"] == "user":
                self._messages.pop()
            raise
        reply = Reply(
            self._model,
            _chat_prompt(self._format, self.history, tools),
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=self.seed,
            constraint=wanted,
            tools=tools,
        )
        self.last_reply = reply
        return self._record(reply)

    def _record(self, reply: Reply) -> Iterator[str]:
        try:
            yield from reply
        finally:
            reply.close()
            message: Message = {"role": "assistant", "content": reply.content}
            if reply.tool_calls:
                message["tool_calls"] = [call.message_part() for call in reply.tool_calls]
            self._messages.append(message)
            self.usage = reply.usage
