"""offgrid_nb.response_body against a real HTTP/1.1 server on loopback, through
huggingface_hub's own client: which bodies are read off the connection, and that the bytes,
a body cut short and a stall come out as the client would give them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from huggingface_hub.utils import get_session

from offgrid_nb.response_body import body_chunks, use_large_reads

DATA = os.urandom(3 << 20)  # three socket reads and more


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for offset in range(0, len(DATA), 1 << 20):
                piece = DATA[offset : offset + (1 << 20)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(DATA)))
        self.end_headers()
        if self.path == "/plain":
            self.wfile.write(DATA)
            return
        self.wfile.write(DATA[: len(DATA) // 2])  # /cut and /stall: half, then...
        self.wfile.flush()
        if self.path == "/stall":
            time.sleep(2)
        self.close_connection = True


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    use_large_reads()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def received(url: str, buffer: bytearray, timeout: float = 5) -> list[bytes | memoryview]:
    """The chunks of one GET, each copied as it comes (a view is valid until the next)."""
    chunks = []
    headers = {"Accept-Encoding": "identity"}
    with get_session().stream("GET", url, headers=headers, timeout=timeout) as response:
        for chunk in body_chunks(response, buffer, timeout):
            chunks.append(chunk if isinstance(chunk, bytes) else memoryview(bytes(chunk)))
    return chunks


def test_a_plain_body_after_its_first_chunk_is_read_into_the_buffer(server):
    buffer = bytearray(1 << 20)
    chunks = received(f"{server}/plain", buffer)
    assert b"".join(chunks) == DATA
    assert isinstance(chunks[0], bytes)  # what the client read with the headers
    assert len(chunks) > 2
    assert all(isinstance(chunk, memoryview) for chunk in chunks[1:])
    assert max(len(chunk) for chunk in chunks[1:]) <= len(buffer)
    last = bytes(chunks[-1])
    assert buffer[: len(last)] == last  # the reads landed in the buffer


def test_a_chunked_body_comes_through_the_client(server):
    chunks = received(f"{server}/chunked", bytearray(1 << 20))
    assert b"".join(chunks) == DATA
    assert all(isinstance(chunk, bytes) for chunk in chunks)


def test_a_body_cut_short_ends_early_without_an_error(server):
    data = b"".join(received(f"{server}/cut", bytearray(1 << 20)))
    assert data == DATA[: len(DATA) // 2]


def test_a_stalled_body_is_a_read_timeout(server):
    lengths: list[int] = []

    def read_all() -> None:
        with get_session().stream("GET", f"{server}/stall", timeout=0.5) as response:
            lengths.extend(len(chunk) for chunk in body_chunks(response, bytearray(1 << 20), 0.5))

    with pytest.raises(httpx2.ReadTimeout):  # the client's own error, as for its own reads
        read_all()
    assert sum(lengths) == len(DATA) // 2
