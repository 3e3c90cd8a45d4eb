"""Chat on a real llama.cpp with a generated model: streaming, history, cache reuse, overflow."""

from __future__ import annotations

import pytest

import offgrid_nb as og
from offgrid_nb.chat import Chat
from offgrid_nb.errors import ContextOverflowError, InvalidArgumentError


@pytest.fixture
def chat(tiny_model):
    return Chat(tiny_model, system="You are terse.", max_tokens=12, seed=7)


def test_stream_pieces_join_to_the_reply(chat):
    pieces = list(chat.stream("Hello there"))
    assert len(pieces) > 1
    assert "".join(pieces) == chat.history[-1]["content"]
    assert chat.history[-1]["role"] == "assistant"
    assert chat.usage.completion_tokens >= len(pieces) - 1
    assert chat.usage.tokens_per_second > 0
    assert chat.usage.time_to_first_token_ms > 0


def test_send_returns_the_whole_reply_and_keeps_history(chat):
    first = chat.send("one")
    second = chat.send("two")
    assert [m["role"] for m in chat.history] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in chat.history[1::2]] == ["one", "two"]
    assert chat.history[2]["content"] == first
    assert chat.history[4]["content"] == second


def test_clear_keeps_only_the_system_prompt(chat):
    chat.send("remember this")
    chat.clear()
    assert chat.history == [{"role": "system", "content": "You are terse."}]
    assert chat.usage is None


def test_later_turns_reuse_the_kv_cache(chat):
    chat.send("first message of a conversation")
    chat.send("second message")
    usage = chat.usage
    # Only the new turn's tokens (plus the re-tokenised tail of the last reply) are evaluated.
    assert usage.prompt_tokens_evaluated < usage.prompt_tokens / 2
    assert usage.prompt_tokens_evaluated > 0


def test_overflow_drops_the_oldest_turns_and_keeps_the_system_prompt(tiny_model):
    chat = Chat(tiny_model, system="SYSTEM PROMPT", n_ctx=128, max_tokens=8, seed=1)
    for i in range(12):
        chat.send(f"turn {i} with a few extra words to fill the window")
    assert chat.dropped_turns > 0
    assert chat.history[0] == {"role": "system", "content": "SYSTEM PROMPT"}
    assert chat.history[-2]["content"].startswith("turn 11")
    assert all(not m["content"].startswith("turn 0 ") for m in chat.history)


def test_a_message_longer_than_the_context_is_refused_cleanly(tiny_model):
    chat = Chat(tiny_model, n_ctx=64, max_tokens=8)
    with pytest.raises(ContextOverflowError, match="too long"):
        chat.send("word " * 200)
    assert chat.history == []
    assert chat.send("short")  # the chat still works


@pytest.mark.parametrize(
    "kwargs", [{"temperature": -1}, {"temperature": 5}, {"max_tokens": 0}, {"n_ctx": 1}]
)
def test_bad_options(tiny_model, kwargs):
    with pytest.raises(InvalidArgumentError):
        Chat(tiny_model, **kwargs)


def test_empty_message(chat):
    with pytest.raises(InvalidArgumentError, match="Empty message"):
        chat.send("   ")


def test_closing_the_stream_stops_and_keeps_the_partial_reply(tiny_model):
    chat = Chat(tiny_model, max_tokens=200, seed=3)
    stream = chat.stream("go on and on")
    taken = [next(stream), next(stream)]
    stream.close()
    assert chat.history[-1] == {"role": "assistant", "content": "".join(taken)}
    assert chat.usage.completion_tokens < 200


def test_thread_count_reaches_llama_cpp(tiny_model):
    from offgrid_nb import engine

    chat = Chat(tiny_model, n_threads=1, max_tokens=4)
    chat.send("hi")
    assert engine.loaded_model().n_threads == 1
    assert engine.loaded_model().llama.n_threads == 1


def test_non_ascii_text_for_a_vocabulary_without_its_bytes_is_a_clear_error(tiny_model):
    # The generated vocabulary's byte tokens stop at 0x7F: llama.cpp would abort the process.
    for call in (
        lambda: og.generate(tiny_model, "café", max_tokens=2),
        lambda: og.complete(tiny_model, [{"role": "user", "content": "naïve"}]),
        lambda: og.embed(tiny_model, "über"),
        lambda: og.perplexity(tiny_model, "ünïcode " * 400, n_ctx=64),
    ):
        with pytest.raises(InvalidArgumentError, match="no tokens for non-ASCII text"):
            call()
    assert og.generate(tiny_model, "cafe", max_tokens=2, temperature=0)  # ASCII is served


@pytest.mark.real
def test_real_model_tokenizes_non_ascii_text(real_model):
    assert og.generate(real_model, "Le café est", max_tokens=2, temperature=0)
