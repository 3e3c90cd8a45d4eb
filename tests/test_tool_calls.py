"""Tool calls (offgrid_nb.tool_calls): formats read off templates, the generic fallback on a
template without tools, calls forced by grammar, results sent back, the agent loop. On the
generated model the words are gibberish, but a required call is always a valid call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import jsonschema
import pytest

from offgrid_nb.chat import Chat, complete
from offgrid_nb.engine import unload_model
from offgrid_nb.errors import InvalidArgumentError
from offgrid_nb.tool_calls import GENERIC, HERMES, LLAMA3, MISTRAL, call_format, plan

HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}\nCall one as <tool_call>"
    '{"name": ..., "arguments": ...}</tool_call><|im_end|>\n{% endif %}'
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}"
    "{% for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Rome"]}},
            "required": ["city"],
        },
    },
}
ZONE = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 4}}}
TIME = {"type": "function", "function": {"name": "time", "parameters": ZONE}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture(autouse=True)
def _free_the_model():
    yield
    unload_model()


def _whole(reply):
    for _ in reply:
        pass
    return reply


def test_formats_are_read_off_the_template():
    assert call_format(HERMES_TEMPLATE) == HERMES
    assert call_format("{{ tools }} [TOOL_CALLS]") == MISTRAL
    assert call_format("{{ tools }} <|python_tag|>") == LLAMA3
    assert call_format("{% for m in messages %}{{ m.content }}{% endfor %}") == GENERIC
    assert call_format(None) == GENERIC  # llama.cpp's built-in templates


@pytest.mark.parametrize("template", [None, HERMES_TEMPLATE])
@pytest.mark.parametrize("parallel", [True, False])
def test_a_required_call_is_a_valid_call(tiny_model, template, parallel):
    reply = _whole(
        complete(
            tiny_model,
            ASK,
            tools=[WEATHER, TIME],
            tool_choice="required",
            template=template,
            parallel_tool_calls=parallel,
            max_tokens=300,
            seed=3,
        )
    )
    if parallel and reply.finish_reason == "length":  # random weights: call after call
        assert reply.text.startswith(("<tool_call>", '{ "tool_calls"')), reply.text
        return
    assert reply.tool_calls, reply.text
    assert len(reply.tool_calls) == 1 or parallel
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}
    for call in reply.tool_calls:
        jsonschema.validate(call.arguments, schemas[call.name])
        assert call.id.startswith("call_")


def test_a_named_choice_calls_that_function_and_none_calls_nothing(tiny_model):
    named = {"type": "function", "function": {"name": "time"}}
    for seed in range(3):
        reply = _whole(
            complete(
                tiny_model, ASK, tools=[WEATHER, TIME], tool_choice=named, max_tokens=300, seed=seed
            )
        )
        assert {c.name for c in reply.tool_calls} == {"time"}
    free = _whole(complete(tiny_model, ASK, tools=[WEATHER], tool_choice="none", max_tokens=8))
    assert free.tool_calls == []
    assert free.content == free.text


def test_auto_is_a_call_or_an_answer(tiny_model):
    for seed in range(3):
        reply = _whole(complete(tiny_model, ASK, tools=[WEATHER], max_tokens=300, seed=seed))
        assert reply.text.startswith("{")  # the grammar's call or answer
        if reply.tool_calls:
            assert reply.tool_calls[0].name == "weather"
        elif reply.finish_reason == "stop":
            assert reply.content != reply.text  # the answer, out of {"response": ...}


def test_a_tool_result_round_trip_on_a_template_without_tools(tiny_model):
    conversation = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c1", "content": "22 C"},  # one role twice: merged
    ]
    gemma_like = (Path(__file__).parent / "data" / "gemma-3-it.jinja").read_text()
    reply = _whole(
        complete(
            tiny_model, conversation, tools=[WEATHER], template=gemma_like, max_tokens=300, seed=1
        )
    )
    assert reply.finish_reason in ("stop", "length")
    shown = plan(gemma_like, [WEATHER]).messages(
        [
            {
                "role": m["role"],
                "content": m["content"] or "",
                **{k: m[k] for k in m if k not in ("role", "content")},
            }
            for m in conversation[:1]
        ]
    )
    assert "weather" in shown[0]["content"]  # the tools, in the system turn


class Calls:
    def __init__(self):
        self.seen = []

    def weather(self, city: Literal["Paris", "Rome"]) -> str:
        """The weather in a city.

        More text that is not the description."""
        self.seen.append(city)
        return f"sunny in {city}"


def test_run_tools_calls_the_python_function_until_the_model_answers(tiny_model):
    calls = Calls()
    chat = Chat(
        tiny_model,
        tools=[calls.weather],
        tool_choice="required",
        run_tools=True,
        max_tokens=300,
        seed=5,
        max_tool_rounds=3,
    )
    chat.send("Weather in Paris?")
    assert calls.seen
    assert set(calls.seen) <= {"Paris", "Rome"}
    roles = [m["role"] for m in chat.history]
    assert roles[:3] == ["user", "assistant", "tool"]
    assert chat.history[2]["content"].startswith("sunny in")
    assert chat.history[1]["tool_calls"][0]["function"]["name"] == "weather"
    manual = Chat(tiny_model, tools=[calls.weather], tool_choice="required", max_tokens=300)
    reply = manual.send("Weather?")
    manual.add_tool_result(reply.tool_calls[0].id, {"sky": "clear"})
    assert json.loads(manual.history[-1]["content"]) == {"sky": "clear"}
    with pytest.raises(InvalidArgumentError, match="No tool call"):
        manual.add_tool_result("nope", "x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tools": {"name": "x"}}, "must be a list"),
        ({"tools": [{"function": {"description": "no name"}}]}, "Invalid tool"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "unknown function",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "Invalid tool_choice"),
        ({"tool_choice": "required"}, "no tools"),
    ],
)
def test_bad_tools_are_one_clear_error(tiny_model, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        complete(tiny_model, ASK, **kwargs)


def test_a_tool_message_must_name_an_earlier_call(tiny_model):
    bad = [*ASK, {"role": "tool", "tool_call_id": "c9", "content": "x"}]
    with pytest.raises(InvalidArgumentError, match="unknown tool_call_id"):
        complete(tiny_model, bad)
