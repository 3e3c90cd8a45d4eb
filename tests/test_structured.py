"""Structured output (offgrid_nb.structured, the grammar sampler in offgrid_nb.batching): on the
generated model, random weights give gibberish, but the grammar makes it valid JSON of the
schema, every time."""

from __future__ import annotations

import json

import jsonschema
import pydantic
import pytest

from offgrid_nb.chat import Chat, complete, generate
from offgrid_nb.engine import unload_model
from offgrid_nb.errors import InvalidArgumentError
from offgrid_nb.structured import constraint

SCHEMAS = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 8},
            "address": {
                "type": "object",
                "properties": {"zip": {"type": "integer"}},
                "required": ["zip"],
            },
        },
        "required": ["name", "address"],
    },
    "array_enum": {
        "type": "object",
        "properties": {
            "colors": {
                "type": "array",
                "items": {"enum": ["red", "green", "blue"]},
                "minItems": 1,
                "maxItems": 3,
            },
            "ok": {"type": "boolean"},
        },
        "required": ["colors", "ok"],
    },
    "optional_number": {
        "type": "object",
        "properties": {
            "score": {"type": "number"},
            "note": {"type": "string", "maxLength": 5},
        },
        "required": ["score"],
    },
    "bounded_string": {"type": "string", "minLength": 2, "maxLength": 6},
}


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=6)
    age: int


@pytest.fixture(autouse=True)
def _free_the_model():
    yield
    unload_model()


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_gibberish_becomes_schema_valid_json(tiny_model, name):
    schema = SCHEMAS[name]
    for seed in range(2):
        text = generate(tiny_model, "Data:", format=schema, max_tokens=200, temperature=1.0,
                        seed=seed)  # fmt: skip
        jsonschema.validate(json.loads(text), schema)
        assert text.parsed == json.loads(text)


def test_json_format_pydantic_and_grammar_on_every_call(tiny_model):
    reply = complete(tiny_model, [{"role": "user", "content": "hi"}], format="json",
                     max_tokens=200, seed=1)  # fmt: skip
    text = "".join(reply)
    assert isinstance(json.loads(text), dict)
    assert reply.finish_reason == "stop"
    chat = Chat(tiny_model, max_tokens=200, seed=2)
    answer = chat.send("Who?", format=Person)
    assert isinstance(answer.parsed, Person)
    assert chat.history[-1]["content"] == answer
    assert chat.send("Yes or no?", grammar='root ::= "yes" | "no"') in ("yes", "no")
    assert chat.send("And now?") == chat.history[-1]["content"]  # free text again


def test_slots_in_one_batch_keep_their_own_grammar(tiny_model):
    first = generate(tiny_model, "a", stream=True, grammar='root ::= "A"+', max_tokens=20,
                     seed=1, parallel=3)  # fmt: skip
    second = generate(tiny_model, "b", stream=True, format=SCHEMAS["array_enum"],
                      max_tokens=200, seed=1, parallel=3)  # fmt: skip
    free = generate(tiny_model, "c", stream=True, max_tokens=20, seed=1, parallel=3,
                    temperature=0)  # fmt: skip
    streams = [iter(first), iter(second), iter(free)]
    while streams:  # interleaved: the three run in the same steps
        streams = [it for it in streams if next(it, None) is not None]
    assert set(first.text) == {"A"}
    jsonschema.validate(json.loads(second.text), SCHEMAS["array_enum"])
    assert free.text == generate(tiny_model, "c", max_tokens=20, seed=1, temperature=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": 7}, "Invalid format"),
        ({"format": "yaml"}, "Invalid format"),
        ({"format": {"type": "strang"}}, "Invalid JSON schema"),
        ({"format": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}, "Unsupported"),
        ({"grammar": "root ::= (("}, "Invalid grammar"),
        ({"grammar": "root ::= missing"}, "Invalid grammar"),
        ({"grammar": 5}, "Invalid grammar"),
        ({"grammar": 'root ::= "a"', "format": "json"}, "either"),
    ],
)
def test_bad_formats_and_grammars_are_one_clear_error(tiny_model, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        generate(tiny_model, "x", max_tokens=4, **kwargs)
    assert generate(tiny_model, "x", max_tokens=2, temperature=0)  # the process lives on


def test_constraint_shapes():
    assert constraint() is None
    assert constraint(format="json").schema == {"type": "object"}
    assert constraint(format=Person).model is Person
    assert constraint(grammar='root ::= "x"').parse("x") is None
    with pytest.raises(InvalidArgumentError, match="not complete JSON"):
        constraint(format="json").parse('{"a": ')
