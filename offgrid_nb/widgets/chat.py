"""``ChatPanel``: a conversation with a local model; replies stream in token by token."""

from __future__ import annotations

import html
import os
import threading
import time
from typing import Any

import ipywidgets as widgets

from ..chat import Chat, Message
from ..chat_template import BASE_MODEL_NOTE
from ..errors import NotFoundError
from .base import Panel, StatusLine, Task
from .choices import including, local_models

UPDATE_INTERVAL = 0.05  # seconds between redraws of a streaming reply: at most ~20 per second
SPEAKERS = {"system": "System", "user": "You", "assistant": "Assistant"}


def conversation_html(messages: list[Message]) -> str:
    """The conversation as HTML, newest at the bottom and scrolled into view."""
    items = "".join(
        f'<div class="offgrid-message {m["role"]}" style="margin: 6px 0">'
        f"<b>{SPEAKERS[m['role']]}</b>"
        f'<div style="white-space: pre-wrap">{html.escape(m["content"])}</div></div>'
        for m in messages
    )
    # column-reverse keeps the scroll position at the bottom while the reply grows
    return (
        '<div style="display: flex; flex-direction: column-reverse; overflow-y: auto; '
        'max-height: 360px"><div role="log" aria-live="polite" aria-label="Conversation">'
        f"{items}</div></div>"
    )


class ChatPanel(Panel):
    """Chat with a local GGUF model in the notebook.

    Generation runs in a worker thread, so the kernel stays usable; Stop ends a reply early (the
    partial reply stays in the conversation). The model is loaded on the first message.

    Args:
        model: a library name or a path (default: pick one in the panel).
        system: an optional system prompt.
        **chat_options: ``n_ctx``, ``temperature``, ``max_tokens``, ``seed``, as for
            :class:`offgrid_nb.chat.Chat`.

    Attributes:
        model: the model picker. template: which chat template the model got (after the first
        message; a base model's text is continued). history: the conversation (HTML).
        prompt: the input box.
        send_button, stop_button, clear_button: the actions. status: notes and errors.
        chat: the :class:`~offgrid_nb.chat.Chat` behind the panel (after the first message).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        system: str | None = None,
        **chat_options: Any,
    ) -> None:
        self.system = system
        self.chat_options = chat_options
        self.chat: Chat | None = None
        self.model = widgets.Dropdown(description="Model", layout={"width": "60%"})
        self.refresh(model)
        self.template = widgets.HTML("")
        self.history = widgets.HTML(conversation_html([]))
        self.prompt = widgets.Textarea(
            placeholder="Message", rows=2, layout={"width": "100%"}, description="Message"
        )
        self.send_button = widgets.Button(
            description="Send", icon="paper-plane", button_style="primary"
        )
        self.stop_button = widgets.Button(description="Stop", icon="stop")
        self.clear_button = widgets.Button(description="Clear", icon="trash")
        self.status = StatusLine()
        self.task = Task(
            self.status,
            busy=[self.model, self.send_button, self.clear_button],
            cancel_button=self.stop_button,
        )
        self.send_button.on_click(lambda _: self.send())
        self.clear_button.on_click(lambda _: self.clear())
        self.model.observe(lambda _: self._forget(), "value")
        self.widget = widgets.VBox(
            [
                self.model,
                self.template,
                self.history,
                self.prompt,
                widgets.HBox([self.send_button, self.stop_button, self.clear_button]),
                self.status,
            ]
        )
        self.widget.add_class("offgrid-chat")

    def refresh(self, model: str | os.PathLike[str] | None = None) -> None:
        """Re-read the models folder into the picker (keeping the choice, or choosing ``model``)."""
        options, chosen = local_models(), model if model is not None else self.model.value
        if chosen:
            options, chosen = including(options, chosen)
        self.model.options = options
        self.model.value = chosen or (options[0][1] if options else None)

    def send(self, text: str | None = None) -> None:
        """Send ``text`` (default: the input box) and stream the reply into the panel.

        Returns at once; the reply appears as it is generated.
        """
        if text is None:
            text, self.prompt.value = self.prompt.value, ""
        if not text.strip():
            self.status.show_error("Type a message first")
            return
        self.task.start(lambda stop: self._reply(text, stop), "Thinking...")

    def stop(self) -> None:
        """Stop the reply being generated (it is kept as it is)."""
        self.task.cancel()

    def clear(self) -> None:
        """Start a new conversation (the system prompt stays)."""
        if self.chat is not None:
            self.chat.clear()
        self.history.value = conversation_html([])
        self.status.show("")

    def _forget(self) -> None:
        self.chat = None
        self.template.value = ""
        self.clear()

    def _reply(self, text: str, stop: threading.Event) -> None:
        shown = self.chat.history if self.chat else []
        self.history.value = conversation_html([*shown, {"role": "user", "content": text}])
        if self.model.value is None:
            raise NotFoundError(
                "No local model to chat with", hint="download one first (the Search panel)"
            )
        if self.chat is None:
            self.status.show(f"Loading {self.model.label}...")
            self.chat = Chat(self.model.value, system=self.system, **self.chat_options)
            choice = self.chat.template_choice
            note = "" if choice.is_chat else f" · {self.model.label} {BASE_MODEL_NOTE}"
            self.template.value = html.escape(f"template: {choice.describe()}{note}")
        chat = self.chat
        pieces = chat.stream(text)
        reply, drawn = "", 0.0
        try:
            for piece in pieces:
                reply += piece
                if stop.is_set():
                    break
                if time.monotonic() - drawn >= UPDATE_INTERVAL:
                    partial = {"role": "assistant", "content": reply}
                    self.history.value = conversation_html([*chat.history, partial])
                    drawn = time.monotonic()
        finally:
            pieces.close()  # records the (partial) reply in the conversation
        self.history.value = conversation_html(chat.history)
        usage = chat.usage
        speed = (
            f"{usage.completion_tokens} tokens · {usage.tokens_per_second:.1f} tokens/s · "
            f"first token after {usage.time_to_first_token_ms:.0f} ms"
            if usage
            else ""
        )
        self.status.show(f"Stopped. {speed}" if stop.is_set() else speed)
