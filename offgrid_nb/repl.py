"""``offgrid run``'s interactive session, as ``ollama run`` has it.

Commands: ``exit``/``quit`` (or ``/exit``...), ``clear`` resets the conversation. Ctrl+C stops
the current reply (not the session); Ctrl+D exits. With piped input, each line is a message
and is echoed after ``You:``, so a transcript reads the same as an interactive session.
"""

from __future__ import annotations

from typing import TextIO

from .chat import Chat
from .chat_template import BASE_MODEL_NOTE
from .errors import OffgridError

EXIT = {"exit", "quit", "bye"}


def _read(stdin: TextIO, stdout: TextIO, interactive: bool) -> str | None:
    """The next line, or ``None`` at end of input (Ctrl+D)."""
    if interactive:
        try:
            return input("You: ")
        except EOFError:
            stdout.write("\n")
            return None
    line = stdin.readline()
    return line.rstrip("\n") if line else None


def _reply(chat: Chat, text: str, stdout: TextIO) -> None:
    stdout.write("Assistant: ")
    stdout.flush()
    pieces = chat.stream(text)
    try:
        for piece in pieces:
            stdout.write(piece)
            stdout.flush()
    except KeyboardInterrupt:
        pieces.close()
        stdout.write(" [stopped]")
    stdout.write("\n")


def run_session(chat: Chat, name: str, *, stdin: TextIO, stdout: TextIO) -> int:
    """Chat until ``exit`` or end of input; return the exit code."""
    interactive = stdin.isatty()
    stdout.write(f"Starting interactive chat with {name}\n")
    stdout.write(f"template: {chat.template_choice.describe()}\n")
    if not chat.template_choice.is_chat:
        stdout.write(f"{name} {BASE_MODEL_NOTE}\n")
    stdout.write("Type 'exit' to quit, 'clear' to reset conversation\n")
    while True:
        try:
            line = _read(stdin, stdout, interactive)
        except KeyboardInterrupt:
            stdout.write("\nUse Ctrl+D or 'exit' to quit.\n")
            continue
        if line is None:
            return 0
        text = line.strip()
        command = text.lower().removeprefix("/")
        if not text:
            continue
        if command in EXIT:
            return 0
        if not interactive:
            stdout.write(f"You: {text}\n")
        if command == "clear":
            chat.clear()
            stdout.write("Conversation cleared.\n")
            continue
        try:
            _reply(chat, text, stdout)
        except OffgridError as exc:  # e.g. a message longer than the context: say so, go on
            stdout.write(f"\nerror: {exc}\n")
