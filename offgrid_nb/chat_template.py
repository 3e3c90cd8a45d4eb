"""Which chat template a model gets, decided in one place, and the prompt it renders.

The rule, first match wins:

1. an override (``Chat(..., template=...)``, ``offgrid run --template``, the REST ``template``
   field): a name from llama.cpp's built-in list, ``"none"`` for a base model, or a Jinja
   string;
2. the GGUF's own ``tokenizer.chat_template``, rendered as llama-cpp-python renders it
   (sandboxed Jinja with ``bos_token``, ``eos_token`` and ``raise_exception``);
3. llama.cpp's built-in template for the model's family, named by :data:`FAMILY_TEMPLATES`
   from the architecture and the file/repo name, rendered by llama.cpp itself
   (``llama_chat_apply_template``) rather than by copies of its templates;
4. else the model is a base model: there is no chat markup, and the text is continued.

Every reply stops at the model's end-of-generation tokens (llama-cpp-python does that), at any
control token (markup, never text), and at the markup that closes a turn or opens the next one,
read off the template itself (:meth:`ChatFormat.stops`).

Choosing needs only the GGUF header (:class:`offgrid_nb.gguf_info.GGUFInfo`), so ``offgrid
inspect`` and ``GET /v1/models`` report the choice without loading a model; rendering needs
the loaded ``llama_cpp.Llama``.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError
from .gguf_info import GGUFInfo, local_header
from .llama_backend import llama_cpp

Message = dict[str, Any]

GGUF, BUILTIN, JINJA, NONE = "gguf", "builtin", "jinja", "none"
# What the front ends say after a base model's name.
BASE_MODEL_NOTE = "has no chat template: treating it as a base model; your text is continued"

# (architecture prefix or None for any, pattern on the lower-cased "repo/file" name, template).
# Instruct/chat fine-tunes only: a base model of the same family has no chat format.
FAMILY_TEMPLATES: tuple[tuple[str | None, str, str], ...] = (
    ("gemma", r"-it\b|-it[-_.]|instruct|chat", "gemma"),
    ("llama", r"llama-?3.*(instruct|chat)", "llama3"),
    ("llama", r"tinyllama.*chat", "zephyr"),
    (None, r"zephyr", "zephyr"),
    ("llama", r"llama-?2.*chat", "llama2"),
    (None, r"(mistral|mixtral).*instruct", "mistral-v1"),
    ("phi3", r"instruct|chat", "phi3"),
    ("qwen", r"", "chatml"),  # Qwen's base and instruct models alike use ChatML
)


@dataclass(frozen=True)
class TemplateChoice:
    """The chat template a model gets: ``kind`` is ``gguf``, ``builtin``, ``jinja`` or ``none``.

    ``name`` is the built-in template's name (``builtin`` only), ``jinja`` the template text
    (``gguf`` and ``jinja``), ``source`` says why: ``gguf``, ``name`` or ``override``.
    """

    kind: str
    source: str
    name: str | None = None
    jinja: str | None = None

    @property
    def is_chat(self) -> bool:
        """False for a base model (its text is continued)."""
        return self.kind != NONE

    def describe(self) -> str:
        """One phrase for the front ends: ``gguf``, ``llama2 (from the name)``, ..."""
        if self.kind == NONE:
            return "none (base model)"
        label = {GGUF: "gguf", JINJA: "custom Jinja"}.get(self.kind, self.name or "?")
        if self.source == "name":
            return f"{label} (from the name)"
        return f"{label} (override)" if self.source == "override" else label


@cache
def builtin_templates() -> tuple[str, ...]:
    """The names of llama.cpp's built-in chat templates (``llama_chat_builtin_templates``)."""
    lib = llama_cpp()
    count = lib.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * count)()
    lib.llama_chat_builtin_templates(names, count)
    return tuple(name.decode() for name in names)


def _family_template(info: GGUFInfo, name: str) -> str | None:
    arch = (info.architecture or "").lower()
    text = name.lower()
    for prefix, pattern, template in FAMILY_TEMPLATES:
        if (prefix is None or arch.startswith(prefix)) and re.search(pattern, text):
            return template
    return None


def check_override(template: Any) -> str | None:
    """A template override as given (``None``, a built-in name, ``"none"`` or Jinja), checked.

    Raises:
        InvalidArgumentError: not a string, or an unknown name.
    """
    if template is None:
        return None
    if not isinstance(template, str) or not template.strip():
        raise InvalidArgumentError(f"Invalid template: {template!r}")
    if _is_jinja(template) or template == NONE or template in builtin_templates():
        return template
    raise InvalidArgumentError(
        f"Unknown chat template {template!r}",
        hint=f"use none, a Jinja string, or one of llama.cpp's: {', '.join(builtin_templates())}",
    )


def _is_jinja(template: str) -> bool:
    return "{{" in template or "{%" in template


def choose_template(info: GGUFInfo, name: str, template: str | None = None) -> TemplateChoice:
    """The template for a model (see the module docstring for the rule).

    Args:
        info: the model's GGUF header.
        name: its file name, best with the repo folder (``"Llama-2-7B-Chat-GGUF/x.gguf"``).
        template: an override, as :func:`check_override` accepts.
    """
    template = check_override(template)
    if template is not None:
        if template == NONE:
            return TemplateChoice(NONE, "override")
        if _is_jinja(template):
            return TemplateChoice(JINJA, "override", jinja=template)
        return TemplateChoice(BUILTIN, "override", name=template)
    if info.chat_template and info.chat_template.strip():
        return TemplateChoice(GGUF, "gguf", jinja=info.chat_template)
    family = _family_template(info, name)
    if family is not None:
        return TemplateChoice(BUILTIN, "name", name=family)
    return TemplateChoice(NONE, "none")


def template_for_file(info: GGUFInfo, path: Path, template: str | None = None) -> TemplateChoice:
    """:func:`choose_template` for a local file, named by its folder (in our library, the
    repo's name) and file name."""
    return choose_template(info, f"{path.parent.name}/{path.name}", template)


def file_template(path: Path) -> TemplateChoice | None:
    """The template a local model file gets (``None`` when its header is unreadable)."""
    info = local_header(path)
    return None if info is None else template_for_file(info, path)


@dataclass(frozen=True)
class Rendered:
    """A prompt ready to tokenize: its text, whether BOS must be added, extra stop strings."""

    text: str
    add_bos: bool
    stop: tuple[str, ...]


class ChatFormat:
    """Renders conversations for one loaded model with its :class:`TemplateChoice`."""

    def __init__(self, llama: Any, choice: TemplateChoice, model_name: str) -> None:
        self.choice = choice
        self.model_name = model_name
        self._bos = _token_text(llama, llama.token_bos())
        self._eos = _token_text(llama, llama.token_eos())
        self._jinja = None
        if choice.jinja is not None:
            from jinja2 import TemplateError
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            try:
                self._jinja = Jinja2ChatFormatter(
                    template=choice.jinja, eos_token=self._eos, bos_token=self._bos
                )
            except TemplateError as exc:
                raise InvalidArgumentError(
                    f"{model_name}'s chat template is not valid Jinja: {exc}",
                    hint="pass another template (template=... / --template NAME)",
                ) from None
        self._stops = self._markup_stops() if choice.is_chat else ()

    def render(self, messages: list[Message], tools: list[dict] | None = None) -> Rendered:
        """The prompt for ``messages``, with the generation prompt for the assistant's turn;
        ``tools`` (OpenAI's function specs) go to a Jinja template as ``tools``.

        Raises:
            InvalidArgumentError: the template refused the conversation (its message quoted).
        """
        if self.choice.kind == NONE:
            return Rendered(continuation(messages), True, ())
        text, add_bos = self._apply(messages, tools)
        return Rendered(text, add_bos, self._stops)

    def _apply(self, messages: list[Message], tools: list[dict] | None = None) -> tuple[str, bool]:
        """The conversation with the generation prompt, and whether BOS must be added."""
        if self._jinja is not None:
            try:
                response = self._jinja(messages=messages, tools=tools)
            except Exception as exc:  # raise_exception() or any error inside the template
                raise self._refused(str(exc)) from None
            return response.prompt, not response.added_special
        text = _apply_builtin(self.choice.name or "", messages)
        if text is None:
            raise self._refused(f"llama.cpp's {self.choice.name} template cannot render it")
        return text, not (self._bos and text.startswith(self._bos))

    def _refused(self, reason: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{self.model_name}'s chat template refused the conversation: {reason}",
            hint="check the order of the roles (many templates want user/assistant turns "
            "alternating), or pass another template",
        )

    def _markup_stops(self) -> tuple[str, ...]:
        """The markup between one turn's text and the next turn's: each word of it stops a
        reply (``<end_of_turn>``, ``<start_of_turn>user``, ``[INST]``...)."""
        a, b, c = "OFFGRIDQ7", "OFFGRIDR7", "OFFGRIDS7"
        turns = [
            {"role": "user", "content": a},
            {"role": "assistant", "content": b},
            {"role": "user", "content": c},
        ]
        try:
            text, _ = self._apply(turns)
        except InvalidArgumentError:
            return ()
        start, end = text.find(b), text.find(c)
        if start < 0 or end < start:
            return ()
        between = text[start + len(b) : end]
        return tuple(dict.fromkeys(word for word in between.split() if word))


def continuation(messages: list[Message]) -> str:
    """A base model's prompt: the conversation's text as one document, without markup.

    A reply continues the text before it, so it follows it directly; any other message
    starts a new line (the system prompt a new paragraph).
    """
    text, previous = "", None
    for message in messages:
        if previous is not None:
            text += "\n\n" if previous == "system" else ""
            if message["role"] != "assistant" and previous != "system":
                text += "\n"
        text += message["content"]
        previous = message["role"]
    return text


def _token_text(llama: Any, token_id: int) -> str:
    return llama._model.token_get_text(token_id) if token_id >= 0 else ""


def _apply_builtin(name: str, messages: list[Message]) -> str | None:
    """llama.cpp's rendering with its built-in template ``name``; ``None`` if it refuses."""
    lib = llama_cpp()
    keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
    chat = (lib.llama_chat_message * len(keep))(*[lib.llama_chat_message(r, c) for r, c in keep])
    size = 256 + 2 * sum(len(r) + len(c) for r, c in keep)
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = lib.llama_chat_apply_template(name.encode(), chat, len(keep), True, buf, size)
        if n < 0:
            return None
        if n <= size:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = n + 1
    return None
