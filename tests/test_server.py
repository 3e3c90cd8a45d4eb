"""The REST API: inside Jupyter (pytest-jupyter's server, non-root base_url) and standalone.

Both servers run on the test's event loop, so clients here are asynchronous (``jp_fetch``,
tornado's client, ``openai.AsyncOpenAI``); the real ``offgrid serve`` runs in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Literal

import openai
import pydantic
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from offgrid_nb.corpus import sample_text
from offgrid_nb.engine import loaded_model
from offgrid_nb.mirror import MirrorServer
from offgrid_nb.perplexity import perplexity
from offgrid_nb.server import ApiState, OffgridAPI
from offgrid_nb.server.standalone import make_app

REPO = "offgrid-test/tiny-llama-GGUF"
FILE = "tiny-llama-F32.gguf"
MODEL = "tiny-llama-F32"
HELLO = [{"role": "user", "content": "Hello"}]
TOKEN = "secret-test-token"
ROOT = Path(__file__).resolve().parents[1]
# generated models have ASCII byte tokens only (llama.cpp aborts on a byte it lacks)
TEXT = sample_text()[:6000].encode("ascii", "ignore").decode()


@pytest.fixture
def api(jp_serverapp) -> ApiState:
    return jp_serverapp.web_app.settings["offgrid_api"]


@pytest.fixture
def fetch(jp_fetch):
    """``(status, JSON)`` of a request to ``{base_url}offgrid/v1/{path}``; never raises."""

    async def fetch(method, path, body=None, *, raw=None, headers=None, **params):
        if body is not None:
            raw = json.dumps(body)
        response = await jp_fetch(
            "offgrid",
            "v1",
            *path.split("/"),
            method=method,
            body=raw,
            params=params,
            headers=headers,
            raise_error=False,
            allow_nonstandard_methods=True,
            request_timeout=120,  # a loaded machine runs llama.cpp slowly
        )
        return response.code, json.loads(response.body or b"null")

    return fetch


async def wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def poll_job(fetch, job_id, until=("done", "failed", "cancelled")):
    for _ in range(300):
        _, job = await fetch("GET", f"models/download/{job_id}")
        if job["status"] in until:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job still {job['status']}")


def test_the_extension_is_enabled_on_install():
    enable = json.loads((ROOT / "extension/jupyter_server_config.d/offgrid_nb.json").read_text())
    assert enable == {"ServerApp": {"jpserver_extensions": {"offgrid_nb": True}}}
    pyproject = (ROOT / "pyproject.toml").read_text()
    shared = '"extension/jupyter_server_config.d" = "etc/jupyter/jupyter_server_config.d"'
    assert shared in pyproject


async def test_health_under_a_non_root_base_url(fetch, jp_base_url, hub):
    assert jp_base_url != "/"
    status, health = await fetch("GET", "health")
    assert status == 200
    assert health["status"] == "ok"
    assert health["version"]
    assert health["system"]["logical_cores"] >= 1
    assert health["model_requests_in_flight"] == 0
    assert health["slots"]["busy"] == health["slots"]["queued"] == 0
    assert health["slots"]["max_queue"] == 512  # OFFGRID_MAX_QUEUE, as Ollama's default
    _, ps = await fetch("GET", "ps")
    assert health["loaded_models"] == len(ps["models"])


async def test_requests_without_the_token_get_403(fetch, hub):
    no_token = {"Authorization": ""}
    for method, path, body in [
        ("GET", "health", None),
        ("GET", "models", None),
        ("POST", "search", {}),
        ("POST", "chat/completions", {"model": MODEL, "messages": HELLO}),
        ("DELETE", "models/download/abc", None),
    ]:
        status, answer = await fetch(method, path, body, headers=no_token)
        assert status == 403, path
        assert answer["error"]["type"] == "permission_error"


async def test_browser_posts_need_the_xsrf_token(jp_fetch, fetch, hub):
    login = await jp_fetch("offgrid", "v1", "health")  # token-authenticated: sets the cookie
    cookies = [c.split(";")[0] for c in login.headers.get_list("Set-Cookie")]
    assert cookies, "no login cookie"
    browser = {"Authorization": "", "Cookie": "; ".join([*cookies, "_xsrf=abc"])}

    status, answer = await fetch("POST", "search", {"limit": 1}, headers=browser)
    assert status == 403
    assert "xsrf" in answer["error"]["message"].lower()
    status, answer = await fetch(
        "POST", "search", {"limit": 1}, headers={**browser, "X-XSRFToken": "abc"}
    )
    assert status == 200, answer


SEARCHES = [  # (filters, repo ids in order)
    ({}, ["TheBloke/Llama-2-7B-Chat-GGUF", "bartowski/Qwen2.5-7B-Instruct-GGUF",
          "unsloth/Qwen3-30B-A3B-GGUF", REPO]),
    ({"query": "qwen"}, ["bartowski/Qwen2.5-7B-Instruct-GGUF", "unsloth/Qwen3-30B-A3B-GGUF"]),
    ({"author": "unsloth"}, ["unsloth/Qwen3-30B-A3B-GGUF"]),
    ({"quantization": "Q4_K_M"}, ["TheBloke/Llama-2-7B-Chat-GGUF",
                                  "bartowski/Qwen2.5-7B-Instruct-GGUF"]),
    ({"min_downloads": 1_000_000}, ["TheBloke/Llama-2-7B-Chat-GGUF"]),
    ({"max_size": 3000}, ["TheBloke/Llama-2-7B-Chat-GGUF"]),
    ({"sort_by": "likes", "limit": 2}, ["TheBloke/Llama-2-7B-Chat-GGUF",
                                        "bartowski/Qwen2.5-7B-Instruct-GGUF"]),
    ({"exclude_gated": False, "limit": 1}, ["meta-llama/Llama-3.2-1B-Instruct-GGUF"]),
    ({"only_gguf": False, "limit": 1}, ["someone/plain-safetensors"]),
]  # fmt: skip


async def test_every_search_filter_works_in_both_forms(fetch, hub):
    for filters, expected in SEARCHES:
        status, posted = await fetch("POST", "search", filters)
        assert status == 200, (filters, posted)
        assert [r["model"]["id"] for r in posted["results"]] == expected, filters
        assert posted["total"] == len(expected)
        query = {("sort" if k == "sort_by" else k): str(v).lower() for k, v in filters.items()}
        status, got = await fetch("GET", "search", **query)
        assert status == 200, (query, got)
        assert got == posted, filters


async def test_search_results_have_offgrids_shape(fetch, hub):
    status, found = await fetch("GET", "search", query="Llama-2", max_size="3KB")
    assert status == 200
    (result,) = found["results"]
    model = result["model"]
    assert model.pop("tags")[0] == "llama"
    assert model == {
        "id": "TheBloke/Llama-2-7B-Chat-GGUF",
        "downloads": 2_500_000,
        "likes": 342,
        "library_name": None,
        "pipeline_tag": None,
    }
    (variant,) = result["gguf_files"]  # only the file under 3 KB
    assert variant["filename"] == "llama-2-7b-chat.Q2_K.gguf"
    assert variant["size"] == 2800
    assert variant["quantization"] == "Q2_K"
    assert variant["download_url"].startswith(hub.url)
    assert set(variant) == {
        "filename", "size", "size_gb", "quantization", "parameter_size", "is_chat", "download_url"
    }  # fmt: skip
    assert result["best_variant"] == {
        "filename": "llama-2-7b-chat.Q2_K.gguf",
        "quantization": "Q2_K",
        "size_gb": 2800 / 1e9,
    }
    assert result["score"] > 0


async def test_search_and_inspect_say_what_fits(fetch, hub):
    status, found = await fetch("GET", "search", query="tiny", ram_gb="8")
    assert status == 200, found
    assert found["results"][0]["fits"] == "fits"
    status, info = await fetch("GET", "inspect", repository=REPO, file=FILE, ram_gb="0.001")
    assert status == 200, info
    assert info["header"]["architecture"] == "llama"
    assert info["memory"]["total_bytes"] > info["memory"]["weights_bytes"] > 0
    assert info["fits"] == "too large"  # 1 MB of RAM


async def test_local_models_in_openais_list_shape(fetch, library):
    status, listed = await fetch("GET", "models")
    assert status == 200
    assert listed["object"] == "list"
    (model,) = listed["data"]
    assert model["id"] == MODEL
    assert model["object"] == "model"
    assert isinstance(model["created"], int)
    assert model["size"] == (library / "local" / FILE).stat().st_size
    assert model["quantization"] == "F32"
    assert model["loaded"] is False


async def test_models_of_other_sources_by_their_names(fetch, library, sources, gguf_hub_root):
    tiny = gguf_hub_root / "offgrid-test" / "fit-GGUF" / "fit-Q8_0.gguf"
    sources.ollama_model("tinyllama:1b", tiny.read_bytes())
    sources.hub_download("offgrid-test/fit-GGUF", "fit-Q4_K_M.gguf")
    status, listed = await fetch("GET", "models")
    assert status == 200
    assert {m["id"]: m["source"] for m in listed["data"]} == {
        MODEL: "offgrid",
        "fit-Q4_K_M": "hf-cache",
        "tinyllama:1b": "ollama",
    }
    for name in ("tinyllama:1b", "ollama:tinyllama:1b", "offgrid-test/fit-GGUF:Q4_K_M"):
        request = {"model": name, "messages": HELLO, "max_tokens": 2}
        status, reply = await fetch("POST", "chat/completions", request)
        assert status == 200, reply
    request = {"model": "hf.co/offgrid-test/fit-GGUF:Q2_K", "messages": HELLO}
    status, error = await fetch("POST", "chat/completions", request)  # not here: no pull
    assert status == 404
    assert "offgrid run offgrid-test/fit-GGUF:Q2_K" in error["error"]["hint"]


async def test_chat_completion_whole_and_streamed(fetch, jp_fetch, library, api):
    request = {"model": MODEL, "messages": HELLO, "max_tokens": 6, "temperature": 0}
    status, whole = await fetch("POST", "chat/completions", request)
    assert status == 200, whole
    assert whole["object"] == "chat.completion"
    assert whole["model"] == MODEL
    (choice,) = whole["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = whole["usage"]
    assert 0 < usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    stream = {**request, "stream": True, "stream_options": {"include_usage": True}}
    response: HTTPResponse = await jp_fetch(
        "offgrid", "v1", "chat", "completions", method="POST", body=json.dumps(stream)
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in response.body.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == choice["message"]["content"]  # greedy: the same reply
    assert chunks[-2]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert chunks[-1]["usage"] == usage
    assert api.gate.in_flight == 0
    _, health = await fetch("GET", "health")
    assert health["loaded_model"]["name"] == MODEL


async def test_the_openai_client_works_unchanged(jupyter_v1, jp_serverapp, library):
    await check_openai_client(jupyter_v1, jp_serverapp.identity_provider.token)
    anonymous = openai.AsyncOpenAI(base_url=jupyter_v1, api_key="wrong", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        await anonymous.models.list()


async def check_openai_client(base_url, api_key):
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    assert [m.id async for m in client.models.list()] == [MODEL]
    options = {"model": MODEL, "messages": HELLO, "max_tokens": 5, "temperature": 0}
    whole = await client.chat.completions.create(**options)
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage.completion_tokens <= 5
    stream = await client.chat.completions.create(**options, stream=True)
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(pieces) == whole.choices[0].message.content
    with pytest.raises(openai.NotFoundError, match="No local model matches"):
        await client.chat.completions.create(**{**options, "model": "no-such-model"})


async def test_two_slots_generate_at_once_and_a_disconnect_frees_its_slot_at_once(
    jupyter_v1, jp_serverapp, fetch, library, api, monkeypatch
):
    replies = []  # what the server generates, to see how each reply ended
    start_reply = api.start_reply

    def recording(request):
        replies.append(start_reply(request))
        return replies[-1]

    monkeypatch.setattr(api, "start_reply", recording)
    token = jp_serverapp.identity_provider.token
    client = openai.AsyncOpenAI(base_url=jupyter_v1, api_key=token, max_retries=0)
    options = {"model": MODEL, "messages": HELLO, "temperature": 0}
    streams = []
    for _ in range(2):  # OffgridAPI.parallel = 2: both generate at once
        stream = await client.chat.completions.create(**options, max_tokens=1500, stream=True)
        streams.append(stream)
        async for chunk in streams[-1]:
            if chunk.choices[0].delta.content:
                break  # generating now
    _, health = await fetch("GET", "health")
    assert health["slots"] == {"parallel": 2, "busy": 2, "queued": 0, "max_queue": 512}
    # Both slots busy and no queue (max_queued_generations = 0): the next is refused, with
    # when to try again.
    with pytest.raises(openai.APIStatusError, match="busy") as refused:
        await client.chat.completions.create(**options, max_tokens=2)
    assert refused.value.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "1"
    await streams[0].close()
    await wait_for(lambda: api.gate.in_flight == 1)
    # The freed slot takes the next request while the other stream still generates.
    whole = await client.chat.completions.create(**options, max_tokens=2)
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert replies[0].finish_reason == "cancelled"
    assert replies[0].usage.completion_tokens < 1500
    assert replies[1].usage is None  # still generating
    await streams[1].close()
    await wait_for(lambda: api.gate.in_flight == 0)
    await wait_for(lambda: not loaded_model().lock.locked())  # the scheduler let go
    assert replies[1].finish_reason == "cancelled"


async def test_benchmark_returns_the_benchmark_json(fetch, library):
    request = {"model": MODEL, "prompt_tokens": 8, "output_tokens": 4, "iterations": 2}
    status, result = await fetch("POST", "benchmark", {**request, "warmup": False})
    assert status == 200, result
    assert result["model"] == MODEL
    assert result["config"]["prompt_tokens"] == 8
    assert len(result["results"]["runs"]) == 2
    assert result["results"]["avg_generation_tokens_per_sec"] > 0
    assert result["system"]["threads_used"] == 1  # OffgridAPI.default_threads


async def test_jupyter_answers_while_a_benchmark_runs(fetch, jp_fetch, library):
    request = {"model": MODEL, "prompt_tokens": 512, "output_tokens": 128, "iterations": 2}
    benchmark = asyncio.ensure_future(fetch("POST", "benchmark", request))
    await wait_for(lambda: loaded_model() is not None and loaded_model().lock.locked())
    latencies, served_while_busy = [], 0
    while not benchmark.done():
        started = time.perf_counter()
        await jp_fetch("api", "status")
        latencies.append(time.perf_counter() - started)
        served_while_busy += loaded_model().lock.locked()  # llama.cpp is still measuring
        await asyncio.sleep(0.02)
    status, _ = await benchmark
    assert status == 200
    assert served_while_busy >= 3, served_while_busy  # a blocked IOLoop answers none
    assert sorted(latencies)[len(latencies) // 2] < 0.2, latencies


async def test_download_job_progress_and_the_model_appears(fetch, hub, api):
    status, job = await fetch(
        "POST", "models/download", {"repository": REPO, "quantization": "F32", "connections": 2}
    )
    assert status == 202, job
    assert job["file_name"] == FILE
    assert api.jobs.get(job["id"]).connections == 2
    done = await poll_job(fetch, job["id"])
    assert done["status"] == "done", done
    assert done["bytes"] == done["total"] > 0
    assert done["error"] is None
    assert done["model"] == MODEL
    _, listed = await fetch("GET", "models")
    assert [m["id"] for m in listed["data"]] == [MODEL]
    assert listed["data"][0]["repo_id"] == REPO
    assert not api.jobs.running()


async def test_cancel_keeps_the_partial_and_one_download_at_a_time(
    fetch, hub, hub_root, monkeypatch, tmp_path, api
):
    with MirrorServer(hub_root, latency_ms=400) as slow:  # each request waits 0.4 s
        monkeypatch.setenv("HF_ENDPOINT", slow.url)
        other = {"repository": "TheBloke/Llama-2-7B-Chat-GGUF", "quantization": "Q2_K"}
        status, small = await fetch("POST", "models/download", other)
        assert status == 202
        assert (await poll_job(fetch, small["id"]))["status"] == "done"

        status, job = await fetch("POST", "models/download", {"repository": REPO})
        assert status == 202, job
        status, same = await fetch("POST", "models/download", {"repository": REPO})
        assert (status, same["id"]) == (202, job["id"])  # the running job, not a second one
        status, busy = await fetch("POST", "models/download", other)
        assert status == 503  # max_download_jobs = 1
        assert busy["error"]["type"] == "overloaded_error"

        await poll_job(fetch, job["id"], until=("downloading",))  # its GET is on the way
        status, cancelling = await fetch("DELETE", f"models/download/{job['id']}")
        assert status == 200
        assert cancelling["status"] in ("cancelling", "cancelled")
        cancelled = await poll_job(fetch, job["id"])
        assert cancelled["status"] == "cancelled"
        assert cancelled["error"]["code"] == "DownloadCancelledError"
        partial = tmp_path / "models" / REPO / f"{FILE}.part"
        assert partial.is_file()  # kept with its sidecar, for the next call to resume
        assert partial.with_name(f"{FILE}.part.json").is_file()
        assert cancelled["bytes"] < cancelled["total"]

        status, again = await fetch("POST", "models/download", {"repository": REPO})
        assert status == 202
        done = await poll_job(fetch, again["id"])
        assert done["status"] == "done", done
        assert not partial.exists()
    assert not api.jobs.running()


async def test_download_jobs_are_listed_and_streamed_as_events(fetch, jp_fetch, hub, api):
    status, job = await fetch("POST", "models/download", {"repository": REPO})
    assert status == 202, job
    status, listed = await fetch("GET", "models/download")
    assert status == 200
    assert [j["id"] for j in listed["data"]] == [job["id"]]

    response = await jp_fetch("offgrid", "v1", "models", "download", job["id"], "events")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in response.body.decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    states = [json.loads(e) for e in events[:-1]]
    assert {s["id"] for s in states} == {job["id"]}
    assert states[-1]["status"] == "done"
    assert states[-1]["bytes"] == states[-1]["total"] > 0
    done_bytes = [s["bytes"] for s in states]
    assert done_bytes == sorted(done_bytes)  # progress only moves forward
    assert len({json.dumps(s) for s in states}) == len(states)  # an event per change

    # A finished job streams its outcome at once.
    again = await jp_fetch("offgrid", "v1", "models", "download", job["id"], "events")
    assert again.body.decode().count("data: ") == 2
    _, listed = await fetch("GET", "models/download")
    assert listed["data"][0]["status"] == "done"


async def poll_run(fetch, kind, job_id, until=("done", "failed", "cancelled")):
    for _ in range(1200):
        _, job = await fetch("GET", f"{kind}/{job_id}")
        if job["status"] in until:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"{kind} job {job_id} never reached {until}: {job}")


def sse_states(body: str) -> list[dict]:
    events = [e.removeprefix("data: ") for e in body.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def test_perplexity_job_equals_og_perplexity(fetch, jp_fetch, library, api, tiny_model):
    request = {"model": MODEL, "text": TEXT, "n_ctx": 64, "chunks": 3}
    status, job = await fetch("POST", "perplexity", request)
    assert status == 202, job
    assert (job["kind"], job["status"]) in {("perplexity", "queued"), ("perplexity", "running")}
    assert job["request"]["text_chars"] == len(TEXT)
    response = await jp_fetch("offgrid", "v1", "perplexity", job["id"], "events")
    assert response.headers["Content-Type"].startswith("text/event-stream")
    states = sse_states(response.body.decode())
    assert {s["id"] for s in states} == {job["id"]}
    done = states[-1]
    assert done["status"] == "done", done
    assert done["error"] is None
    progress = done["progress"]
    assert (progress["model"], progress["done"], progress["total"]) == (MODEL, 3, 3)
    assert progress["ppl"] == pytest.approx(done["result"]["ppl"])
    counts = [s["progress"]["done"] if s["progress"] else 0 for s in states]
    assert counts == sorted(counts)  # progress only moves forward
    expected = perplexity(tiny_model, TEXT, n_ctx=64, chunks=3, n_threads=1)
    assert done["result"]["ppl"] == pytest.approx(expected.ppl, rel=1e-6)
    assert (done["result"]["chunks"], done["result"]["tokens_scored"]) == (3, 3 * 31)
    status, same = await fetch("GET", f"perplexity/{job['id']}")
    assert (status, same) == (200, done)
    _, listed = await fetch("GET", "perplexity")
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    _, other_kind = await fetch("GET", "quality")
    assert other_kind["data"] == []
    status, _ = await fetch("GET", f"quality/{job['id']}")
    assert status == 404  # a perplexity job is no quality job
    assert api.gate.in_flight == 0


async def test_a_long_run_streams_progress_and_cancels(
    jupyter_v1, jp_serverapp, fetch, library, api
):
    long_text = TEXT * 200  # ~20k chunks: it runs until cancelled
    status, job = await fetch(
        "POST", "perplexity", {"model": MODEL, "text": long_text, "n_ctx": 64}
    )
    assert status == 202, job
    status, queued = await fetch("POST", "perplexity", {"model": MODEL, "text": TEXT, "n_ctx": 64})
    assert (status, queued["status"]) == (202, "queued")  # one run at a time
    received: list[bytes] = []
    token = jp_serverapp.identity_provider.token
    stream = asyncio.ensure_future(
        AsyncHTTPClient().fetch(
            f"{jupyter_v1}/perplexity/{job['id']}/events",
            headers={"Authorization": f"token {token}"},
            streaming_callback=received.append,
            request_timeout=120,
        )
    )

    def streamed() -> list[dict]:
        body = b"".join(received).decode()
        return [json.loads(e.removeprefix("data: ")) for e in body.split("\n\n")
                if e.startswith("data: {")]  # fmt: skip

    await wait_for(lambda: any((s["progress"] or {}).get("done", 0) >= 2 for s in streamed()), 60)
    assert api.gate.in_flight == 1  # the run holds one place at the model gate
    status, cancelled_queued = await fetch("DELETE", f"perplexity/{queued['id']}")
    assert (status, cancelled_queued["status"]) == (200, "cancelled")  # never started
    status, cancelling = await fetch("DELETE", f"perplexity/{job['id']}")
    assert status == 200
    assert cancelling["status"] in ("cancelling", "cancelled")
    await stream
    states = streamed()
    assert states[-1]["status"] == "cancelled"
    assert states[-1]["error"]["code"] == "RunCancelledError"
    assert states[-1]["result"] is None
    assert 2 <= states[-1]["progress"]["done"] < states[-1]["progress"]["total"]
    assert b"".join(received).decode().endswith("data: [DONE]\n\n")
    await wait_for(lambda: api.gate.in_flight == 0)
    await wait_for(lambda: not loaded_model().lock.locked())
    _, listed = await fetch("GET", "perplexity")
    assert [j["status"] for j in listed["data"]] == ["cancelled", "cancelled"]


async def test_quality_job_on_two_variants(fetch, library, api, gguf_hub_root):
    lower = gguf_hub_root / "offgrid-test" / "fit-GGUF" / "fit-Q2_K.gguf"
    shutil.copyfile(lower, library / "local" / lower.name)
    request = {"model": [MODEL, "fit-Q2_K"], "text": TEXT, "n_ctx": 64, "chunks": 2, "speed": False}
    status, job = await fetch("POST", "quality", request)
    assert status == 202, job
    assert job["request"]["speed"] is False
    done = await poll_run(fetch, "quality", job["id"])
    assert done["status"] == "done", done
    rows = done["result"]
    assert [(r["model"], r["reference"]) for r in rows] == [
        ("tiny-llama-F32", True), ("fit-Q2_K", False),
    ]  # fmt: skip
    assert rows[0]["kld"] == 0.0
    assert rows[1]["kld"] > 0
    assert rows[1]["quant"] == "Q2_K"
    assert all(r["tokens_scored"] == 2 * 31 for r in rows)
    assert "generation_tokens_per_sec" not in rows[0]
    # The reference named by its quant, then by its name: the same table.
    for reference in ("Q2_K", "fit-Q2_K"):
        status, job = await fetch("POST", "quality", {**request, "reference": reference})
        assert status == 202, job
        again = await poll_run(fetch, "quality", job["id"])
        assert [r["model"] for r in again["result"]] == ["fit-Q2_K", "tiny-llama-F32"]
    assert api.gate.in_flight == 0


async def test_model_details_verify_and_delete(fetch, hub, api, tmp_path):
    _, job = await fetch("POST", "models/download", {"repository": REPO})
    assert (await poll_job(fetch, job["id"]))["status"] == "done"

    status, details = await fetch("GET", f"models/{MODEL}")
    assert status == 200, details
    assert details["id"] == MODEL
    assert details["files"] == [f"{REPO}/{FILE}"]
    assert details["architecture"] == "llama"
    assert details["chat_template"] is True
    assert details["repo_id"] == REPO
    assert len(details["sha256"]) == 64
    assert details["header"]["vocab_size"] > 0
    _, listed = await fetch("GET", "models", details="true")
    assert listed["data"][0]["chat_template"] is True
    assert listed["data"][0]["architecture"] == "llama"
    _, plain = await fetch("GET", "models")
    assert "chat_template" not in plain["data"][0]  # the cheap list reads no header

    status, verified = await fetch("POST", f"models/{MODEL}/verify")
    assert (status, verified) == (200, {"id": MODEL, "ok": True})
    path = tmp_path / "models" / REPO / FILE
    with path.open("r+b") as f:  # flip a byte
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    status, corrupt = await fetch("POST", f"models/{MODEL}/verify")
    assert status == 502
    assert "corrupt" in corrupt["error"]["message"]

    request = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    assert (await fetch("POST", "chat/completions", request))[0] == 200
    assert loaded_model() is not None
    status, deleted = await fetch("DELETE", f"models/{MODEL}")
    assert status == 200, deleted
    assert deleted["deleted"] is True
    assert loaded_model() is None  # unloaded before its file went
    assert not path.exists()
    assert not (tmp_path / "models" / REPO).exists()
    _, listed = await fetch("GET", "models")
    assert listed["data"] == []
    assert api.gate.in_flight == 0


async def test_benchmark_runs_are_kept_for_the_sidebar(fetch, library):
    request = {"model": MODEL, "prompt_tokens": 8, "output_tokens": 2, "iterations": 1}
    runs = []
    for _ in range(2):
        status, run = await fetch("POST", "benchmark", {**request, "warmup": False})
        assert status == 200, run
        runs.append(run)
    status, kept = await fetch("GET", "benchmark", model=MODEL)
    assert status == 200
    assert [r["id"] for r in kept["data"]] == [r["id"] for r in runs]
    assert kept["data"][0]["model_id"] == MODEL
    assert kept["data"][1]["results"] == runs[1]["results"]
    _, everything = await fetch("GET", "benchmark")
    assert len(everything["data"]) == 2
    _, other = await fetch("GET", "benchmark", model="other-model")
    assert other["data"] == []


async def test_jupyterlabs_cache_buster_is_not_an_unknown_field(fetch, library):
    # ServerConnection.makeRequest appends ?<milliseconds> to every request of the sidebar.
    status, listed = await fetch("GET", "models", details="true", **{"1796137158979": ""})
    assert status == 200, listed
    assert listed["data"][0]["id"] == MODEL


async def test_variants_say_what_fits(fetch, hub):
    status, answer = await fetch("GET", "variants", repository=REPO, ram_gb="8")
    assert status == 200, answer
    assert answer["repository"] == REPO
    assert answer["available_gb"] == 8
    (variant,) = answer["variants"]
    assert variant["filename"] == FILE
    assert variant["fits"] == "fits"
    assert variant["recommended"] is True
    assert 0 < variant["total_gb"] < 1
    _, tiny = await fetch("GET", "variants", repository=REPO, ram_gb="0.001")
    assert tiny["variants"][0]["fits"] == "too large"


async def test_variants_and_inspect_with_vram_gb(fetch, hub):
    status, answer = await fetch("GET", "variants", repository=REPO, ram_gb="8", vram_gb="16")
    assert status == 200, answer
    (variant,) = answer["variants"]
    assert variant["offload"] == "gpu"  # a tiny model: every layer on a 16 GB card
    assert variant["gpu_layers"] == variant["n_layers"] > 1
    assert 0 < variant["vram_gb"] < 1
    _, cpu = await fetch("GET", "variants", repository=REPO, ram_gb="8")
    assert (cpu["variants"][0]["offload"], cpu["variants"][0]["gpu_layers"]) == ("cpu", 0)
    status, info = await fetch("GET", "inspect", repository=REPO, file=FILE, vram_gb="16")
    assert status == 200, info
    assert info["offload"]["verdict"] == "gpu"
    assert info["offload"]["devices"]["GPU"] > 0


BAD_REQUESTS = [  # (method, path, body or raw text or query, status, words in the message)
    ("POST", "search", "{not json", 400, "not valid JSON"),
    ("POST", "search", "[1, 2]", 400, "JSON object"),
    ("POST", "search", {"limit": "5"}, 400, "Invalid limit"),
    ("POST", "search", {"limit": 0}, 400, "Invalid limit"),
    ("POST", "search", {"limit": 101}, 400, "from 1 to 100"),
    ("POST", "search", {"sort_by": "banana"}, 400, "Invalid sort"),
    ("POST", "search", {"quant": "Q4_K_M"}, 400, "Unknown field: quant"),
    ("POST", "search", {"exclude_gated": "no"}, 400, "Invalid exclude_gated"),
    ("GET", "search", {"limit": "-1"}, 400, "Invalid limit"),
    ("GET", "search", {"limit": "many"}, 400, "Invalid limit"),
    ("GET", "search", {"sort": "banana"}, 400, "Invalid sort"),
    ("GET", "search", {"max_size": "huge"}, 400, "huge"),
    ("GET", "inspect", {"repository": REPO}, 400, "Missing field: file"),
    ("POST", "chat/completions", {"messages": HELLO}, 400, "Missing field: model"),
    ("POST", "chat/completions", {"model": 5, "messages": HELLO}, 400, "Invalid model"),
    ("POST", "chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("POST", "chat/completions", {"model": MODEL, "messages": HELLO, "temperature": "hot"},
     400, "Invalid temperature"),
    ("POST", "chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 0},
     400, "Invalid max_tokens"),
    ("POST", "chat/completions", {"model": MODEL, "messages": HELLO, "stream": "yes"},
     400, "Invalid stream"),
    ("POST", "chat/completions", {"model": "no-such-model", "messages": HELLO},
     404, "No local model matches"),
    ("POST", "chat/completions", {"model": "../../etc/passwd", "messages": HELLO},
     400, "Invalid model"),
    ("POST", "chat/completions", {"model": "/etc/passwd", "messages": HELLO}, 400, "Invalid model"),
    *[("POST", path, {"model": MODEL, **({"messages": HELLO} if path.startswith("chat") else
       {"prompt": "x"}), **extra}, 400, words)
      for path in ("chat/completions", "completions")
      for extra, words in [
          ({"response_format": {"type": "yaml"}}, "response_format type"),
          ({"response_format": "json"}, "Invalid response_format"),
          ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 3}}}},
           "Invalid JSON schema"),
          ({"json_schema": {"type": "object", "required": "a"}}, "Invalid JSON schema"),
          ({"grammar": 'root ::= "a"', "json_schema": {}}, "not several"),
      ]],
    ("POST", "benchmark", {"model": "..\\..\\x.gguf"}, 400, "Invalid model"),
    ("POST", "benchmark", {"model": MODEL, "iterations": "3"}, 400, "Invalid iterations"),
    ("POST", "benchmark", {"model": MODEL, "iterations": 0}, 400, "Invalid iterations"),
    ("POST", "benchmark", {"model": "no-such-model"}, 404, "No local model matches"),
    ("POST", "models/download", {}, 400, "Missing field: repository"),
    ("POST", "models/download", {"repository": "../../etc"}, 400, "Invalid repository"),
    ("POST", "models/download", {"repository": REPO, "file_name": "../../etc/passwd"},
     404, "no model file"),
    ("POST", "models/download", {"repository": REPO, "file_name": FILE, "quantization": "F32"},
     400, "not both"),
    ("POST", "models/download", {"repository": "nobody/nothing"}, 404, "not found"),
    ("POST", "models/download", {"repository": REPO, "connections": 0},
     400, "connections must be between 1 and 64"),
    ("POST", "models/download", {"repository": REPO, "connections": "8"},
     400, "Invalid connections"),
    ("GET", "models/download/123", None, 404, "No download job"),
    ("DELETE", "models/download/123", None, 404, "No download job"),
    ("GET", "models/download/123/events", None, 404, "No download job"),
    ("POST", "perplexity", {"model": MODEL, "n_ctx": 8}, 400, "at least 16"),
    ("POST", "perplexity", {"model": MODEL, "n_ctx": "64"}, 400, "Invalid n_ctx"),
    ("POST", "perplexity", {"model": MODEL, "chunks": 0}, 400, "Invalid chunks"),
    ("POST", "perplexity", {"model": MODEL, "text": "x", "dataset": "wikitext-2"},
     400, "not both"),
    ("POST", "perplexity", {"model": MODEL, "text": ""}, 400, "empty"),
    ("POST", "perplexity", {"model": MODEL, "dataset": "no-such-set"}, 404, "Unknown dataset"),
    ("POST", "perplexity", {"model": MODEL, "n_cxt": 64}, 400, "Unknown field: n_cxt"),
    ("POST", "perplexity", {"model": MODEL, "quants": ["Q8_0"]}, 400, "Unknown field: quants"),
    ("POST", "perplexity", {}, 400, "Missing field: model"),
    ("POST", "perplexity", {"model": "/etc/passwd"}, 400, "Invalid model"),
    ("POST", "perplexity", {"model": "no-such-model"}, 404, "No local model matches"),
    ("POST", "quality", {"model": "../../etc"}, 400, "Invalid repository"),
    ("POST", "quality", {"model": []}, 400, "Invalid model"),
    ("POST", "quality", {"model": [MODEL, "../x.gguf"]}, 400, "Invalid model"),
    ("POST", "quality", {"model": [MODEL], "quants": "Q8_0"}, 400, "Invalid quants"),
    ("POST", "quality", {"model": [MODEL], "quants": ["Q9_Z"]}, 400, "Invalid quantization"),
    ("POST", "quality", {"model": [MODEL], "speed": "yes"}, 400, "Invalid speed"),
    ("POST", "quality", {"model": [MODEL], "reference": "no-such-model"},
     404, "No local model matches"),
    ("POST", "quality", {"model": [MODEL, "no-such-model"]}, 404, "No local model matches"),
    ("POST", "quality", {"model": "nobody/nothing"}, 404, "not found"),
    ("POST", "quality", {"model": REPO, "quants": ["Q2_K"]}, 404, "no GGUF variant among Q2_K"),
    *[(method, f"{kind}/123{tail}", None, 404, f"No {kind} job")
      for kind in ("perplexity", "quality")
      for method, tail in (("GET", ""), ("DELETE", ""), ("GET", "/events"))],
    ("GET", "models", {"details": "maybe"}, 400, "Invalid details"),
    ("GET", "models/no-such-model", None, 404, "No local model matches"),
    ("DELETE", "models/no-such-model", None, 404, "No local model matches"),
    ("DELETE", "models/~root", None, 400, "Invalid model"),
    ("POST", "models/no-such-model/verify", None, 404, "No local model matches"),
    ("GET", "variants", {}, 400, "Missing field: repository"),
    ("GET", "variants", {"repository": REPO, "ram_gb": "lots"}, 400, "Invalid ram_gb"),
    ("GET", "variants", {"repository": "nobody/nothing"}, 404, "not found"),
    ("GET", "variants", {"repository": REPO, "vram_gb": "0"}, 400, "Invalid vram_gb"),
    ("GET", "benchmark", {"modle": MODEL}, 400, "Unknown field: modle"),
]  # fmt: skip


def _ours() -> set[threading.Thread]:
    """The server's work threads (the mirror's hashing pool plays the Hub: not the server's)."""
    return {
        t
        for t in threading.enumerate()
        if t.name.startswith("offgrid-") and not t.name.startswith("offgrid-mirror")
    }


async def test_bad_input_is_a_4xx_and_leaves_nothing_behind(fetch, library, api):
    await fetch("GET", "health")  # whatever starts on first use has started
    before = set(threading.enumerate())
    for method, path, payload, status, words in BAD_REQUESTS:
        query = payload if method == "GET" and isinstance(payload, dict) else {}
        body = payload if method == "POST" and isinstance(payload, dict) else None
        raw = payload if isinstance(payload, str) else None
        got, answer = await fetch(method, path, body, raw=raw, **query)
        assert got == status, (method, path, payload, answer)
        assert words.lower() in answer["error"]["message"].lower(), (payload, answer)
        assert answer["error"]["type"]
    assert api.jobs.jobs == {}
    assert api.runs.jobs == {}
    assert api.gate.in_flight == 0
    # Our work threads are named offgrid-*; others (Jupyter's executors) are not ours to judge.
    await wait_for(lambda: not {t for t in _ours() if t not in before}, timeout=5)


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=8)
    tags: list[Literal["a", "b"]] = pydantic.Field(max_length=2)


async def test_structured_output_through_the_openai_client(jupyter_v1, jp_serverapp, library):
    client = openai.AsyncOpenAI(
        base_url=jupyter_v1, api_key=jp_serverapp.identity_provider.token, max_retries=0
    )
    parsed = await client.chat.completions.parse(
        model=MODEL, messages=HELLO, response_format=Person, max_completion_tokens=300, seed=1
    )
    assert isinstance(parsed.choices[0].message.parsed, Person)
    assert parsed.usage.total_tokens == parsed.usage.prompt_tokens + parsed.usage.completion_tokens
    whole = await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        response_format={"type": "json_object"},
        max_tokens=300,
        temperature=0,  # a sampled random-weight string may run past max_tokens
    )
    assert isinstance(json.loads(whole.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    stream = await client.chat.completions.create(
        model=MODEL, messages=HELLO, stream=True, extra_body={"json_schema": schema},
        max_tokens=200, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert set(json.loads(text)) == {"n"}
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    text = await client.completions.create(
        model=MODEL, prompt=["Answer:"], max_tokens=20, extra_body={"grammar": 'root ::= "no"'}
    )
    assert text.choices[0].text == "no"
    for bad in ("root ::= (((", "root ::= undefined"):  # llama.cpp refuses; the server lives on
        with pytest.raises(openai.BadRequestError, match="Invalid grammar"):
            await client.chat.completions.create(
                model=MODEL, messages=HELLO, extra_body={"grammar": bad}
            )
    assert (await client.models.list()).data


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Rome"]}},
            "required": ["city"],
        },
    },
}


async def test_tool_calls_through_the_openai_client(jupyter_v1, jp_serverapp, library):
    client = openai.AsyncOpenAI(
        base_url=jupyter_v1, api_key=jp_serverapp.identity_provider.token, max_retries=0
    )
    ask = {
        "model": MODEL,
        "messages": HELLO,
        "tools": [WEATHER],
        "max_tokens": 300,
        "seed": 2,
        "parallel_tool_calls": False,
        "tool_choice": "required",
    }
    whole = await client.chat.completions.create(**ask)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome")
    stream = await client.chat.completions.create(**ask, stream=True)
    deltas = [c.choices[0] async for c in stream if c.choices]
    parts = [part for d in deltas for part in d.delta.tool_calls or []]
    assert parts[0].id
    assert parts[0].function.name == "weather"
    assert json.loads("".join(p.function.arguments or "" for p in parts)) == json.loads(
        call.function.arguments
    )
    assert deltas[-1].finish_reason == "tool_calls"
    back = [
        *HELLO,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = await client.chat.completions.create(
        model=MODEL, messages=back, tools=[WEATHER], max_tokens=8
    )
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")
    for bad, words in [
        ({"tools": {"a": 1}}, "must be a list"),
        ({"tools": [{"type": "function", "function": {}}]}, "Invalid tool"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "unknown function"),
        (
            {"messages": [*HELLO, {"role": "tool", "tool_call_id": "x", "content": ""}]},
            "unknown tool_call_id",
        ),
    ]:
        with pytest.raises(openai.BadRequestError, match=words):
            await client.chat.completions.create(**{**ask, **bad})
    assert (await client.models.list()).data  # still answering


# --- standalone -------------------------------------------------------------------------------


@pytest.fixture
def standalone(library):
    """Serve ``offgrid serve``'s application on the test's loop (call it from the test):
    ``standalone(token)`` returns the ``/v1`` URL."""
    servers = []

    def start(token=None):
        sock, port = bind_unused_port()
        servers.append(HTTPServer(make_app(ApiState.from_config(OffgridAPI()), token=token)))
        servers[-1].add_sockets([sock])
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for server in servers:
        server.stop()


async def test_standalone_works_with_the_openai_client(standalone):
    await check_openai_client(standalone(TOKEN), TOKEN)


async def test_standalone_needs_the_bearer_token(standalone):
    v1 = standalone(TOKEN)
    client = AsyncHTTPClient()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"token {TOKEN}"}):
        response = await client.fetch(f"{v1}/models", headers=headers, raise_error=False)
        assert response.code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(response.body)["error"]["type"] == "authentication_error"
    for path in ("/models", "/nothing-here", "/../api/contents"):
        response = await client.fetch(f"{v1}{path}", raise_error=False)
        assert response.code == 401, path  # nothing answers before authentication
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    response = await client.fetch(f"{v1}/nothing-here", headers=bearer, raise_error=False)
    assert response.code == 404
    assert json.loads(response.body)["error"]["message"] == "No endpoint /v1/nothing-here"
    response = await client.fetch(
        f"{v1}/search", method="POST", body="{}", headers=bearer, raise_error=False
    )
    assert response.code == 200  # an API client with the token needs no XSRF cookie


async def test_standalone_without_token_refuses_other_sites(standalone):
    url = f"{standalone()}/models"
    client = AsyncHTTPClient()
    response = await client.fetch(url)
    assert json.loads(response.body)["data"][0]["id"] == MODEL
    evil = {"Origin": "https://evil.example"}
    response = await client.fetch(url, headers=evil, raise_error=False)
    assert response.code == 404  # a page on another site cannot use it


def test_offgrid_serve_warns_when_it_binds_beyond_loopback(hub):
    process = subprocess.Popen(
        [sys.executable, "-m", "offgrid_nb.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        warning = process.stderr.readline()
        banner = process.stdout.readline()
        assert "warning" in warning
        assert "without a token" in warning
        port = banner.split("0.0.0.0:")[1].split("/")[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=20) as answer:
            assert json.loads(answer.read())["status"] == "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.real
async def test_the_real_model_over_rest(fetch, jupyter_v1, jp_serverapp, real_library):
    base, instruct = "gemma-3-270m-q4_k_m", "gemma-3-270m-it-q4_k_m"
    status, models = await fetch("GET", "models")
    assert status == 200
    assert {m["id"]: m["template"] for m in models["data"]} == {
        base: "none (base model)",
        instruct: "gguf",
    }
    client = openai.AsyncOpenAI(
        base_url=jupyter_v1, api_key=jp_serverapp.identity_provider.token, max_retries=0
    )
    options = {"model": base, "prompt": "The capital of France is", "max_tokens": 16}
    whole = await client.completions.create(**options, temperature=0)
    assert whole.object == "text_completion"
    assert "France" in whole.choices[0].text
    assert whole.usage.completion_tokens == 16
    stream = await client.completions.create(**options, temperature=0, stream=True)
    pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert "".join(pieces) == whole.choices[0].text
    twice = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    status, answer = await fetch("POST", "chat/completions", {"model": instruct, "messages": twice})
    assert status == 400
    assert "roles must alternate" in answer["error"]["message"]
    status, answer = await fetch(
        "POST", "chat/completions", {"model": base, "messages": HELLO, "template": "gemma",
                                     "max_tokens": 8, "temperature": 0},
    )  # fmt: skip
    assert status == 200
    assert "<" not in answer["choices"][0]["message"]["content"]  # no markup
    status, answer = await fetch(
        "POST", "chat/completions", {"model": base, "messages": HELLO, "template": "no-such"}
    )
    assert (status, answer["error"]["type"]) == (400, "invalid_request_error")
    status, answer = await fetch("POST", "completions", {"model": base, "prompt": ""})
    assert status == 400


@pytest.mark.real
async def test_langchain_structured_output_and_tools_on_the_real_model(
    jupyter_v1, jp_serverapp, jp_http_port, jp_base_url, real_library
):
    from langchain_ollama import ChatOllama
    from langchain_openai import ChatOpenAI

    instruct, token = "gemma-3-270m-it-q4_k_m", jp_serverapp.identity_provider.token

    class City(pydantic.BaseModel):
        name: str = pydantic.Field(max_length=20)
        country: str = pydantic.Field(max_length=20)

    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    openai_chat = ChatOpenAI(model=instruct, base_url=jupyter_v1, api_key=token, max_tokens=120,
                             temperature=0, max_retries=0)  # fmt: skip
    host = f"http://127.0.0.1:{jp_http_port}{jp_base_url}offgrid"
    auth = {"headers": {"Authorization": f"token {token}"}}
    ollama_chat = ChatOllama(model=instruct, base_url=host, num_predict=120, temperature=0,
                             client_kwargs=auth)  # fmt: skip
    for chat in (openai_chat, ollama_chat):
        city = await chat.with_structured_output(City).ainvoke("Name the capital of France.")
        assert isinstance(city, City)
    forced = openai_chat.bind_tools([weather], tool_choice="weather")
    message = await forced.ainvoke("Weather in Paris?")
    assert message.tool_calls[0]["name"] == "weather"
    assert isinstance(message.tool_calls[0]["args"], dict)
    free = await ollama_chat.bind_tools([weather]).ainvoke("Weather in Paris?")
    assert free.tool_calls or free.content  # auto: a call or an answer
