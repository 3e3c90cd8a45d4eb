"""The Ollama-compatible API, driven by the official ``ollama`` client, inside Jupyter
(``{base_url}offgrid/api``, with Jupyter's token) and on ``offgrid serve`` (``/api``, Bearer)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import httpx
import numpy as np
import ollama
import openai
import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from offgrid_nb.engine import loaded_model, loaded_models, unload_model
from offgrid_nb.server import ApiState, OffgridAPI
from offgrid_nb.server.keep_alive import parse_duration
from offgrid_nb.server.standalone import make_app

MODEL = "tiny-llama-F32"
HELLO = [{"role": "user", "content": "Hello"}]
GREEDY = {"temperature": 0, "num_predict": 6}


@pytest.fixture
def jupyter_ollama(jp_serverapp, http_server, jp_http_port, jp_base_url):
    """An ``ollama.AsyncClient`` for the Jupyter server's ``offgrid/api``."""
    token = jp_serverapp.identity_provider.token
    host = f"http://127.0.0.1:{jp_http_port}{jp_base_url}offgrid"
    return ollama.AsyncClient(host=host, headers={"Authorization": f"token {token}"})


async def test_the_ollama_client_lists_shows_and_chats(jupyter_ollama, library):
    client = jupyter_ollama
    listed = await client.list()
    assert [m.model for m in listed.models] == [MODEL]
    assert listed.models[0].details.family == "llama"
    assert listed.models[0].size > 0
    shown = await client.show(MODEL)
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "{% for message in messages %}" in shown.template

    whole = await client.chat(model=MODEL, messages=HELLO, options=GREEDY, stream=False)
    assert whole.done
    assert whole.message.role == "assistant"
    assert 0 < whole.eval_count <= 6
    for name in ("total_duration", "prompt_eval_duration", "eval_duration", "load_duration"):
        assert getattr(whole, name) > 0, name
    assert whole.prompt_eval_count > 0
    assert whole.total_duration >= whole.eval_duration
    stream = await client.chat(model=MODEL, messages=HELLO, options=GREEDY, stream=True)
    pieces = [p async for p in stream]
    assert all(not p.done for p in pieces[:-1])
    assert pieces[-1].done
    assert pieces[-1].done_reason in ("stop", "length")
    assert "".join(p.message.content for p in pieces) == whole.message.content


async def test_generate_embed_ps_and_keep_alive(jupyter_ollama, library):
    client = jupyter_ollama
    text = await client.generate(model=MODEL, prompt="Hello", options=GREEDY, raw=True)
    assert text.done
    assert text.eval_count > 0
    stream = await client.generate(model=MODEL, prompt="Hello", options=GREEDY, raw=True,
                                   stream=True)  # fmt: skip
    streamed = [p async for p in stream]
    assert "".join(p.response for p in streamed) == text.response

    embedded = await client.embed(model=MODEL, input=["one text", "another text"])
    vectors = np.array(embedded.embeddings)
    assert vectors.shape == (2, 256)  # the tiny model's width
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    legacy = await client.embeddings(model=MODEL, prompt="one text")
    assert np.allclose(legacy.embedding, vectors[0], atol=1e-5)

    running = await client.ps()
    assert [m.model for m in running.models] == [MODEL]
    assert running.models[0].size > 0
    await client.generate(model=MODEL, prompt="", keep_alive=0)  # Ollama's way to unload
    assert loaded_model() is None
    assert (await client.ps()).models == []
    await client.generate(model=MODEL, prompt="")  # and to load
    assert loaded_model() is not None
    await client.generate(model=MODEL, prompt="Hi", options=GREEDY, raw=True, keep_alive=0.3)
    for _ in range(100):  # the keep-alive check unloads it when 0.3 s have passed
        if loaded_model() is None:
            break
        await asyncio.sleep(0.05)
    assert loaded_model() is None


async def test_a_chat_model_and_an_embedding_model_stay_loaded_side_by_side(
    jupyter_ollama, library
):
    client = jupyter_ollama
    shutil.copyfile(library / "local" / f"{MODEL}.gguf", library / "local" / "embedder.gguf")
    await client.chat(model=MODEL, messages=HELLO, options=GREEDY)
    chat_model = loaded_model()
    for _ in range(3):  # RAG: embed, then chat, again and again: nothing reloads
        await client.embed(model="embedder", input="a text", keep_alive=0.3)
        await client.chat(model=MODEL, messages=HELLO, options=GREEDY)
    assert not chat_model.closed
    assert loaded_model() is chat_model
    running = [m.model for m in (await client.ps()).models]
    assert running == [MODEL, "embedder"]  # the most recently used first
    for _ in range(100):  # the embedder's own keep-alive (0.3 s) unloads it alone
        if len(loaded_models()) == 1:
            break
        await asyncio.sleep(0.05)
    assert [m.model for m in (await client.ps()).models] == [MODEL]
    assert not chat_model.closed


async def test_pull_with_progress_then_delete(jupyter_ollama, hub, jp_serverapp):
    client = jupyter_ollama
    lines = [p async for p in await client.pull("hf.co/offgrid-test/tiny-llama-GGUF", stream=True)]
    assert lines[0].status == "pulling manifest"
    progress = [p for p in lines if p.total]
    assert progress
    assert progress[-1].completed == progress[-1].total
    assert lines[-1].status == "success"
    jobs = jp_serverapp.web_app.settings["offgrid_api"].jobs.jobs.values()
    assert [(j.repository, j.status) for j in jobs] == [("offgrid-test/tiny-llama-GGUF", "done")]
    assert [m.model for m in (await client.list()).models] == [MODEL]
    again = await client.pull("hf.co/offgrid-test/tiny-llama-GGUF:F32")  # already there
    assert again.status == "success"
    await client.delete(MODEL)
    assert (await client.list()).models == []
    unload_model()


async def test_errors_come_in_ollamas_shape(jupyter_ollama, library):
    client = jupyter_ollama
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="no-such-model", messages=HELLO)
    assert missing.value.status_code == 404
    assert "No local model matches" in missing.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        await client.chat(model="../../etc/passwd", messages=HELLO)
    assert bad.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as pull:
        await client.pull("not a hub name")
    assert pull.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as gone:
        await client.delete("no-such-model")
    assert gone.value.status_code == 404


async def test_malformed_json_and_no_token(jp_fetch, library):
    response = await jp_fetch("offgrid", "api", "chat", method="POST", body="{nope",
                              raise_error=False)  # fmt: skip
    assert response.code == 400
    assert set(json.loads(response.body)) == {"error"}
    anonymous = await jp_fetch("offgrid", "api", "tags", headers={"Authorization": ""},
                               raise_error=False)  # fmt: skip
    assert anonymous.code == 403
    unknown = await jp_fetch("offgrid", "api", "nothing-here", raise_error=False)
    assert unknown.code == 404
    assert "error" in json.loads(unknown.body)


async def test_openai_embeddings_float_and_base64(jupyter_v1, jp_serverapp, library):
    client = openai.AsyncOpenAI(
        base_url=jupyter_v1, api_key=jp_serverapp.identity_provider.token, max_retries=0
    )
    floats = await client.embeddings.create(model=MODEL, input=["a b c"], encoding_format="float")
    default = await client.embeddings.create(model=MODEL, input="a b c")  # base64 on the wire
    assert np.allclose(floats.data[0].embedding, default.data[0].embedding, atol=1e-6)
    assert floats.usage.prompt_tokens > 0
    unload_model()


async def test_the_standalone_server_speaks_ollama_with_a_bearer_token(library):
    socket, port = bind_unused_port()  # offgrid serve's application, with a token
    server = HTTPServer(make_app(ApiState.from_config(OffgridAPI()), token="t0k"))
    server.add_sockets([socket])
    standalone = f"http://127.0.0.1:{port}"
    client = ollama.AsyncClient(host=standalone, headers={"Authorization": "Bearer t0k"})
    assert [m.model for m in (await client.list()).models] == [MODEL]
    reply = await client.chat(model=MODEL, messages=HELLO, options=GREEDY)
    assert reply.done
    with pytest.raises(ollama.ResponseError) as denied:
        await ollama.AsyncClient(host=standalone).list()
    assert denied.value.status_code == 401
    server.stop()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(300, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), ("0", 0.0), ("250ms", 0.25)],
)
def test_keep_alive_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "5 minutes", True, None])
def test_bad_keep_alive_durations(value):
    with pytest.raises(ValueError, match="keep_alive"):
        parse_duration(value)


def _cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "offgrid_nb.cli", *argv], capture_output=True,
                          text=True, timeout=120, check=False, **kwargs)  # fmt: skip


def test_offgrid_serve_on_an_ollama_port_and_offgrid_ps(library):
    ports = [bind_unused_port() for _ in range(2)]
    for sock, _ in ports:
        sock.close()
    api_port, ollama_port = (port for _, port in ports)
    command = ["serve", "--port", str(api_port), "--ollama-port", str(ollama_port), "--token", "T"]
    process = subprocess.Popen([sys.executable, "-m", "offgrid_nb.cli", *command],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert "/v1" in process.stdout.readline()
        assert f"Ollama-compatible API also on http://127.0.0.1:{ollama_port}" in (
            process.stdout.readline()
        )
        client = ollama.Client(host=f"http://127.0.0.1:{ollama_port}",
                               headers={"Authorization": "Bearer T"})  # fmt: skip
        client.generate(model=MODEL, prompt="")  # load it
        shown = _cli("ps", "--url", f"http://127.0.0.1:{api_port}", "--token", "T")
        assert shown.returncode == 0, shown.stderr
        header, row = shown.stdout.splitlines()
        assert header.split() == ["NAME", "MEMORY", "CONTEXT", "UNTIL"]
        assert row.startswith(MODEL)
        assert row.endswith(" min")  # the server's default keep-alive: 5 minutes
    finally:
        process.terminate()
        process.wait(timeout=10)
    down = _cli("ps", "--url", f"http://127.0.0.1:{api_port}")
    assert down.returncode == 1
    assert down.stderr.startswith("error: No offgrid server answered at")


def _strict(text: str):
    """JSON as a strict parser reads it: NaN, Infinity and -Infinity refused."""

    def refuse(word: str):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


async def test_the_ollama_client_lists_models_from_every_source(sources, library, tiny_model):
    sources.hub_download("offgrid-test/fit-GGUF", "fit-Q4_K_M.gguf")  # no sha256 recorded
    sources.lmstudio_model("lmstudio-community", "fit-GGUF", "fit-F32.gguf", tiny_model)
    sources.llama_cpp_model("offgrid-test/fit-GGUF", "fit-F32.gguf", tiny_model)
    sources.ollama_model("tinyllama:1b", tiny_model.read_bytes())
    (sources.extra / "mine").mkdir(parents=True)
    (sources.extra / "mine" / "mine-F32.gguf").write_bytes(tiny_model.read_bytes())
    socket, port = bind_unused_port()
    server = HTTPServer(make_app(ApiState.from_config(OffgridAPI()), token="t0k"))
    server.add_sockets([socket])
    host = f"http://127.0.0.1:{port}"
    try:
        client = ollama.AsyncClient(host=host, headers={"Authorization": "Bearer t0k"})
        listed = (await client.list()).models  # pydantic-validated by the client
        assert len(listed) == 6
        digests = [m.digest for m in listed]
        assert all(isinstance(d, str) and len(d) == 64 for d in digests)
        assert len(set(digests)) == 6
        assert digests == [m.digest for m in (await client.list()).models]  # stable
        assert all(m.modified_at is not None and m.details.format == "gguf" for m in listed)
        auth = {"Authorization": "Bearer t0k"}
        async with httpx.AsyncClient(base_url=host, headers=auth) as raw:
            _strict((await raw.get("/api/tags")).text)
            for name in ("model", "name"):  # the older clients send "name"
                shown = await raw.post("/api/show", json={name: listed[0].model})
                body = _strict(shown.text)
                assert isinstance(body["model_info"], dict)
                assert "completion" in body["capabilities"]
    finally:
        server.stop()


def test_answers_are_strict_json():
    from offgrid_nb.server.responses import dumps

    assert _strict(dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
    with pytest.raises(ValueError, match="JSON compliant"):
        dumps({"digest": float("nan")})


async def test_format_json_and_schema_through_the_ollama_client(jupyter_ollama, jp_fetch, library):
    client = jupyter_ollama
    options = {"num_predict": 300, "seed": 1}
    reply = await client.chat(model=MODEL, messages=HELLO, format="json", options=options)
    assert isinstance(json.loads(reply.message.content), dict)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    stream = await client.generate(model=MODEL, prompt="Is it?", format=schema, options=options,
                                   stream=True)  # fmt: skip
    lines = [line async for line in stream]
    assert set(json.loads("".join(line.response for line in lines))) == {"ok"}
    assert isinstance(lines[-1].eval_count, int)
    assert isinstance(lines[-1].prompt_eval_count, int)
    for bad, words in [(7, "Invalid format"), ("yaml", "Invalid format"),
                       ({"type": "strang"}, "Invalid JSON schema")]:  # fmt: skip
        body = json.dumps({"model": MODEL, "messages": HELLO, "format": bad})
        refused = await jp_fetch(
            "offgrid", "api", "chat", method="POST", body=body, raise_error=False
        )  # fmt: skip (the client refuses to send 7)
        assert refused.code == 400
        assert words in json.loads(refused.body)["error"]
    assert (await client.chat(model=MODEL, messages=HELLO, options=GREEDY)).done  # still alive


def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city
    """
    return "sunny"


async def test_tools_through_the_ollama_client(jupyter_ollama, library):
    client = jupyter_ollama
    options = {"num_predict": 300, "seed": 4}
    for stream in (False, True):
        reply = await client.chat(
            model=MODEL, messages=HELLO, tools=[weather], options=options, stream=stream
        )
        if stream:
            lines = [line async for line in reply]
            assert lines[-1].done
            calls = [c for line in lines for c in line.message.tool_calls or []]
        else:
            calls = reply.message.tool_calls or []
        for call in calls:  # auto: a call or an answer; a call is whole, arguments an object
            assert call.function.name == "weather"
            assert isinstance(call.function.arguments, dict)
    back = [
        *HELLO,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "weather"},
    ]
    answer = await client.chat(model=MODEL, messages=back, options=GREEDY)
    assert answer.done
