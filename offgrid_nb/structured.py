"""Structured output: what a reply must look like, as a GBNF grammar, made in one place.

A reply is constrained by a grammar that llama.cpp's grammar sampler applies in the slot
scheduler (:mod:`offgrid_nb.batching`). The front ends only say what they were given:

- ``format="json"``: any JSON object (as Ollama's ``"json"`` and OpenAI's ``json_object``);
- ``format={...}``: a JSON schema, turned into GBNF by llama-cpp-python's own converter
  (``llama_cpp.llama_grammar.SchemaConverter``, the port of llama.cpp's
  ``json_schema_to_grammar``);
- ``format=PydanticModel``: its JSON schema, and the reply validated into an instance;
- ``grammar="root ::= ..."``: GBNF as given (llama-server's ``grammar`` field).

Bad input (a format of the wrong type, a schema that is not one, a construct the converter
refuses, GBNF that llama.cpp cannot parse) is an :class:`InvalidArgumentError` naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError
from .llama_backend import llama_cpp

# llama-cpp-python's copy of the converter lets raw control characters into strings, which
# strict JSON parsers refuse; llama.cpp's own (common/json-schema-to-grammar.cpp) excludes them.
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


@dataclass(frozen=True)
class Constraint:
    """What a reply must be: ``grammar`` (GBNF, root rule ``root``), and how to read it.

    ``schema`` is the JSON schema (``None`` for free GBNF), ``model`` a pydantic model class
    whose instance the reply is parsed into, ``json`` whether the reply is JSON at all.
    """

    grammar: str
    schema: dict[str, Any] | None = None
    model: Any = None
    json: bool = True

    def parse(self, text: str) -> Any:
        """The reply's value: a pydantic instance, parsed JSON, or ``None`` for free GBNF.

        Raises:
            InvalidArgumentError: the text is not the JSON the constraint promised (a reply
                cut by ``max_tokens``).
        """
        if not self.json:
            return None
        try:
            if self.model is not None:
                return self.model.model_validate_json(text)
            return json.loads(text)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidArgumentError(
                f"The reply is not complete JSON: {str(exc).splitlines()[0]}",
                hint="give it more max_tokens",
            ) from None


def json_grammar() -> str:
    """GBNF for one JSON object, any keys (what Ollama's ``"json"`` and OpenAI's
    ``json_object`` promise), as llama-server makes it: the schema ``{"type": "object"}``
    (its whitespace bounded, so a model cannot run away in blank lines)."""
    return schema_grammar({"type": "object"})


def schema_grammar(schema: Any) -> str:
    """GBNF for the JSON values ``schema`` allows (llama-cpp-python's converter).

    Raises:
        InvalidArgumentError: ``schema`` is not a valid JSON schema, or uses a construct the
            converter does not support.
    """
    import jsonschema
    from llama_cpp.llama_grammar import SchemaConverter

    if not isinstance(schema, dict):
        raise InvalidArgumentError(f"Invalid JSON schema: {schema!r} (must be an object)")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidArgumentError(f"Invalid JSON schema: {exc.message}") from None
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        converter.visit(converter.resolve_refs(schema, "schema"), "")
    except Exception as exc:  # the converter raises bare ValueError/KeyError/AssertionError
        raise InvalidArgumentError(
            f"Unsupported JSON schema: {type(exc).__name__}: {exc}",
            hint="llama.cpp's schema converter supports types, properties, required, enum, "
            "const, items, anyOf/oneOf, $ref, string lengths and patterns, number bounds",
        ) from None
    return "\n".join(
        _STRICT_CHAR if line.startswith("char ::= ") else line
        for line in converter.format_grammar().splitlines()
    )


def constraint(format: Any = None, grammar: Any = None) -> Constraint | None:
    """The constraint for a reply's ``format`` and/or ``grammar`` (``None``: free text).

    Args:
        format: ``None``, ``"json"``, a JSON schema (dict) or a pydantic model class.
        grammar: GBNF text (its root rule ``root``); not with ``format``.

    Raises:
        InvalidArgumentError: a format of the wrong type, an invalid schema, both given.
    """
    if grammar is not None:
        if format is not None:
            raise InvalidArgumentError("Give either a format or a grammar, not both")
        if not isinstance(grammar, str) or not grammar.strip():
            raise InvalidArgumentError(f"Invalid grammar: {grammar!r} (must be GBNF text)")
        return Constraint(grammar, json=False)
    if format is None or format == "":
        return None
    if format == "json":
        return Constraint(json_grammar(), schema={"type": "object"})
    if isinstance(format, dict):
        return Constraint(schema_grammar(format), schema=format)
    schema_of = getattr(format, "model_json_schema", None)
    if isinstance(format, type) and callable(schema_of):  # a pydantic model class
        schema = schema_of()
        return Constraint(schema_grammar(schema), schema=schema, model=format)
    raise InvalidArgumentError(
        f"Invalid format: {format!r}",
        hint='use "json", a JSON schema object, or a pydantic model class',
    )


def grammar_sampler(vocab: Any, grammar: str) -> Any:
    """llama.cpp's grammar sampler for ``grammar`` on a model's vocabulary (free it with
    ``llama_sampler_free``).

    Raises:
        InvalidArgumentError: llama.cpp could not parse the grammar (its reason quoted).
    """
    lib = llama_cpp()
    sampler = lib.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:  # llama.cpp's parser prints its reason to stderr, not to its log
        raise InvalidArgumentError(
            "Invalid grammar (GBNF): llama.cpp could not parse it (a syntax error, an "
            "undefined rule, or left recursion)",
            hint="see llama.cpp's grammars/README.md; the root rule is named root",
        )
    return sampler


def check_grammar(vocab: Any, grammar: str) -> None:
    """Raise :class:`InvalidArgumentError` now when llama.cpp cannot parse ``grammar``."""
    llama_cpp().llama_sampler_free(grammar_sampler(vocab, grammar))
