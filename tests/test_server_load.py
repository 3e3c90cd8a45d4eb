"""The servers under many clients: no request leaves anything behind (memory, slots)."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from offgrid_nb.chat import Reply
from offgrid_nb.server import ApiState, OffgridAPI
from offgrid_nb.server.standalone import make_app

MODEL = "tiny-llama-F32"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}


@pytest.fixture
def serve(library):
    """``offgrid serve``'s application on the test's loop: ``(base URL, its ApiState)``."""
    sock, port = bind_unused_port()
    api = ApiState.from_config(OffgridAPI())
    server = HTTPServer(make_app(api))
    server.add_sockets([sock])
    yield f"http://127.0.0.1:{port}", api
    server.stop()


async def post(url: str, body: dict, **options) -> tuple[int, bytes]:
    response = await AsyncHTTPClient().fetch(
        url, method="POST", body=json.dumps(body), raise_error=False, request_timeout=120,
        **options,
    )  # fmt: skip
    return response.code, response.body


async def requests(base: str, count: int, clients: int = 4) -> list[int]:
    """``count`` requests from ``clients`` at once, a mix of /v1 and /api, streamed or not."""
    mix = [
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/api/chat", {**CHAT, "options": {"num_predict": 8}}),
        ("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"num_predict": 8}}),
    ]
    statuses: list[int] = []

    async def client(first: int) -> None:
        for i in range(first, count, clients):
            path, body = mix[i % len(mix)]
            statuses.append((await post(base + path, body))[0])

    await asyncio.gather(*(client(i) for i in range(clients)))
    return statuses


def live_replies() -> int:
    gc.collect()
    return sum(isinstance(thing, Reply) for thing in gc.get_objects())


async def test_hundreds_of_requests_leave_no_python_memory_behind(serve):
    base, _ = serve
    assert set(await requests(base, 40)) == {200}  # warm-up: model loaded, caches filled
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        assert set(await requests(base, 300)) == {200}
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # The leak found kept every request's handler, reply and Jinja environment alive for the
    # keep-alive (5 min) through the context its timer copied: > 4 MB over these 300 requests.
    assert growth < 1_000_000, f"{growth} bytes kept by 300 requests"
    assert live_replies() <= 4  # at most the last few, until their handlers are collected
