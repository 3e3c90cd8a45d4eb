"""The real model (google/gemma-3-270m Q4_K_M) through every layer: Hub, fit, download, chat,
generate, benchmark, the CLI and the REST API, served by our mirror under its real repo id.

The GGUF carries no chat template (a base model); ``templated_model`` is the same weights with
gemma-3-it's Jinja template written into its metadata, standing for an instruct model.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from llama_cpp import Llama

import offgrid_nb as og
from offgrid_nb import bundled_model
from offgrid_nb.bench import benchmark
from offgrid_nb.chat import Chat, complete, generate
from offgrid_nb.chat_template import BASE_MODEL_NOTE
from offgrid_nb.engine import unload_model
from offgrid_nb.fit import estimate_memory, recommend
from offgrid_nb.gguf_info import inspect_gguf

pytestmark = pytest.mark.real

REPO, FILE = bundled_model.REPO_ID, bundled_model.FILENAME
MARKUP = ("<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>", "<bos>", "<eos>")
CAPITAL = [{"role": "user", "content": "Name the capital of France."}]


@pytest.fixture(scope="module", autouse=True)
def _free_the_model():
    yield
    unload_model()


@pytest.fixture(scope="module")
def reference(real_model):
    """llama-cpp-python's own Llama over the same file, as the equivalence tests' yardstick."""
    llama = Llama(model_path=str(real_model), n_ctx=4096, n_threads=2, verbose=False)
    yield llama
    llama.close()


def test_search_inspect_and_fit_over_the_mirror(real_hub):
    results = og.search("gemma-3-270m", limit=5)
    row = results[results.id == REPO].iloc[0]
    assert row.best_file == FILE
    info = inspect_gguf(REPO, FILE)
    assert (info.architecture, info.vocab_size, info.quant) == ("gemma3", 262144, "Q4_K_M")
    assert info.chat_template is None
    estimate = estimate_memory(info, n_ctx=4096)
    assert 240e6 < estimate.weights_bytes < 260e6
    fits = recommend(REPO, ram_gb=8)
    assert fits[fits.filename == FILE].fits.iloc[0] == "fits"


def test_download_then_generate_exactly_as_llama_cpp_python(real_hub, reference):
    path = og.download(REPO, FILE)
    assert og.list_models().name.tolist() == ["gemma-3-270m-q4_k_m"]
    prompt = "The capital of France is"
    ours = generate("gemma-3-270m-q4_k_m", prompt, max_tokens=24, temperature=0, n_ctx=4096)
    theirs = reference.create_completion(prompt, max_tokens=24, temperature=0)
    assert ours == theirs["choices"][0]["text"]
    assert "France" in ours  # real text, in English
    pieces = list(generate(path, prompt, max_tokens=24, temperature=0, n_ctx=4096, stream=True))
    assert "".join(pieces) == ours
    stopped = generate(path, prompt, max_tokens=24, temperature=0, n_ctx=4096, stop="France")
    assert stopped == ours[: ours.index("France")]


def test_a_base_model_continues_the_text(real_model):
    chat = Chat(real_model, max_tokens=12, temperature=0)
    assert chat.template_choice.describe() == "none (base model)"
    reply = chat.send("Name the capital of France.")
    assert "Paris" in reply
    assert not any(mark in reply for mark in MARKUP)


def test_the_templated_copy_replies_as_llama_cpp_python_does(templated_model):
    chat = Chat(templated_model, max_tokens=32, temperature=0, n_ctx=4096)
    assert chat.template_choice.describe() == "gguf"
    ours = chat.send(CAPITAL[0]["content"])
    unload_model()
    reference = Llama(model_path=str(templated_model), n_ctx=4096, n_threads=2, verbose=False)
    try:
        theirs = reference.create_chat_completion(CAPITAL, max_tokens=32, temperature=0)
    finally:
        reference.close()
    text = theirs["choices"][0]["message"]["content"]
    assert ours
    assert text.startswith(ours)
    assert not any(mark in ours for mark in MARKUP)


def test_llama_cpp_builtin_template_by_override(real_model):
    chat = Chat(real_model, max_tokens=16, temperature=0, template="gemma")
    assert chat.template_choice.describe() == "gemma (override)"
    rendered = chat._format.render(CAPITAL)
    assert rendered.text.startswith("<start_of_turn>user\nName the capital of France.")
    assert rendered.text.endswith("<start_of_turn>model\n")
    assert "<end_of_turn>" in rendered.stop
    assert not any(mark in chat.send("Hi") for mark in MARKUP)


def test_a_template_that_refuses_the_conversation_is_a_clear_error(templated_model):
    twice = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(og.InvalidArgumentError, match="roles must alternate") as caught:
        complete(templated_model, twice)
    assert "gemma-3-270m-it-q4_k_m's chat template refused the conversation" in str(caught.value)


def test_benchmark_names_its_tests_as_llama_bench(real_model):
    after = benchmark(real_model, prompt_tokens=16, output_tokens=4, iterations=1, depth=8)
    assert (after.config.prompt_test, after.config.generation_test) == ("pp16 @ d8", "tg4 @ d24")
    alone = benchmark(real_model, prompt_tokens=16, output_tokens=4, llama_bench=True)
    assert alone.config.iterations == 5
    assert len(alone.runs) == 5
    assert (alone.config.prompt_test, alone.config.generation_test) == ("pp16", "tg4")
    assert alone.to_dict()["config"]["tests"] == {"prompt": "pp16", "generation": "tg4"}
    assert (alone.runs.generation_tokens_per_sec > 0).all()


def _offgrid(*argv, stdin="", env=None):
    return subprocess.run(
        [sys.executable, "-m", "offgrid_nb.cli", *argv],
        input=stdin, capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip


def test_cli_inspect_run_and_benchmark(real_hub, real_model, templated_model):
    import os

    env = dict(os.environ)
    inspected = _offgrid("inspect", REPO, FILE, env=env)
    assert inspected.returncode == 0, inspected.stderr
    assert "  template       none (base model)" in inspected.stdout
    run = _offgrid("run", str(real_model), "--max-tokens", "12", "--temperature", "0",
                   stdin="Name the capital of France.\n", env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "template: none (base model)" in run.stdout
    assert f"{real_model} {BASE_MODEL_NOTE}" in run.stdout
    assert "Paris" in run.stdout
    refused = _offgrid("run", str(templated_model), "--template", "nonsense", env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: Unknown chat template 'nonsense'")
    bench = _offgrid("benchmark", str(real_model), "--prompt-tokens", "16", "--output-tokens",
                     "4", "--llama-bench", "--iterations", "1", "--json", env=env)  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert json.loads(bench.stdout)["config"]["tests"] == {"prompt": "pp16", "generation": "tg4"}


REAL_SCHEMAS = [
    {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
     "country": {"enum": ["France", "Italy", "Spain"]}}, "required": ["city", "country"],
     "additionalProperties": False},
    {"type": "object", "properties": {"facts": {"type": "array", "maxItems": 3,
     "items": {"type": "object", "properties": {"text": {"type": "string", "minLength": 1,
     "maxLength": 40}, "sure": {"type": "boolean"}}, "required": ["text"],
     "additionalProperties": False}},
     "count": {"type": "integer"}, "score": {"type": "number"}}, "required": ["facts", "count"],
     "additionalProperties": False},
]  # fmt: skip


@pytest.mark.parametrize("which", ["base", "templated"])
def test_the_real_model_gives_schema_valid_json(real_model, templated_model, which):
    import jsonschema

    model = real_model if which == "base" else templated_model
    for schema in REAL_SCHEMAS:
        for seed in (1, 2):
            reply = complete(model, CAPITAL, format=schema, max_tokens=200, seed=seed)
            text = "".join(reply)
            jsonschema.validate(json.loads(text), schema)
    answer = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 30}},
              "required": ["answer"], "additionalProperties": False}  # fmt: skip
    chat = Chat(templated_model, max_tokens=200, temperature=0)
    assert set(chat.send("Name the capital of France.", format=answer).parsed) == {"answer"}


def test_the_real_model_calls_a_python_function_on_a_template_without_tools(templated_model):
    asked = []

    def capital(country: str) -> str:
        """The capital city of a country."""
        asked.append(country)
        return "Paris"

    chat = Chat(templated_model, tools=[capital], tool_choice="required", run_tools=True,
                max_tool_rounds=2, max_tokens=120, temperature=0)  # fmt: skip
    answer = chat.send("What is the capital of France?")
    assert asked
    assert [m["role"] for m in chat.history][:3] == ["user", "assistant", "tool"]
    assert isinstance(answer, str)
