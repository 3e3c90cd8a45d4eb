"""Reading a large HTTP response body with little CPU: what downloads receive their bytes with.

``huggingface_hub``'s client (``httpx2`` over ``httpcore2`` and ``h11``) reads 64 KiB at a time
and copies every chunk three times in Python (into ``h11``'s buffer, out of it, into ``bytes``),
allocating each copy anew and holding the GIL meanwhile. On a fast link that is most of a
download's CPU and starves the thread that hashes what arrives: one 512 MB GET on loopback
spent 0.9-2.3 s of CPU a GB (receive and write) through the client and 0.4-0.6 s reading the
socket into one reused buffer (a probe of py-spy's findings; the effect on whole downloads is
in ``benchmarks/download_throughput.py``). Neither library has an option for it
(encode/httpcore#135), so this module

- raises ``httpcore2``'s read size (:func:`use_large_reads`), and
- reads the rest of an HTTP/1.1 body of known length over plain TCP (a LAN mirror, loopback:
  where the CPU, not the link, is the limit) straight off its socket (:func:`body_chunks`),
  reached through the ``network_stream`` response extension that ``httpcore`` documents for
  stepping outside its request/response model.

The client still sends the request, follows redirects and reads the headers and the bytes that
came with them, so proxies, tokens and errors are as it handles them. A connection whose body was
read this way is closed afterwards instead of reused (the client never saw the body's end).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import httpcore2
import httpx2

READ_SIZE = 1 << 20  # bytes per socket read


def use_large_reads() -> None:
    """Let ``httpcore2``'s HTTP/1.1 connections read up to :data:`READ_SIZE` bytes a time.

    Only the buffer size changes, never the bytes, so raising this class attribute is safe for
    every other request.
    """
    connection = httpcore2.HTTP11Connection
    connection.READ_NUM_BYTES = max(connection.READ_NUM_BYTES, READ_SIZE)


def _plain_socket(response: httpx2.Response) -> socket.socket | None:
    """The TCP socket under ``response`` when its connection is plain (no TLS), else ``None``."""
    stream = response.extensions.get("network_stream")
    if stream is None or stream.get_extra_info("ssl_object") is not None:
        return None
    sock = stream.get_extra_info("socket")
    return sock if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket) else None


def _direct_length(response: httpx2.Response) -> int | None:
    """The body's length when it can be read off the connection itself, else ``None``."""
    headers = response.headers
    length = headers.get("Content-Length", "")
    plain = (
        response.http_version == "HTTP/1.1"
        and "Transfer-Encoding" not in headers
        and headers.get("Content-Encoding", "identity").lower() == "identity"
    )
    return int(length) if plain and length.isdigit() else None


def body_chunks(
    response: httpx2.Response, buffer: bytearray, timeout: float | None
) -> Iterator[bytes | memoryview]:
    """``response``'s body (a streamed response, not read yet) as it arrives.

    The body of a plain (not TLS) HTTP/1.1 connection with a known length is read into
    ``buffer`` after its first chunk, with ``recv_into``: each chunk yielded is then a view of
    ``buffer``, valid until the next one is asked for. Its connection is closed afterwards
    (a new one costs a round trip on a LAN). Anything else (TLS, where a new connection would
    cost a handshake per request and decryption costs more than the copies; HTTP/2; chunked;
    compressed; a test transport) comes through the client.

    Args:
        response: from ``client.stream(...)``; ``Accept-Encoding: identity`` asked for.
        buffer: where the direct reads land (its size is the largest chunk).
        timeout: seconds without a byte before the read fails.

    Raises:
        httpx2.ReadError, httpx2.ReadTimeout: the connection failed or stalled.
    """
    chunks = response.iter_bytes()
    sock = _plain_socket(response)
    left = _direct_length(response) if sock is not None else None
    if left is None:
        yield from chunks
        return
    for chunk in chunks:  # the bytes read with the headers (or the client's first read)
        left -= len(chunk)
        yield chunk
        break
    sock.settimeout(timeout)
    view = memoryview(buffer)
    while left > 0:
        try:
            chunk = view[: sock.recv_into(view, min(len(view), left))]
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc) or "timed out", request=response.request) from exc
        except OSError as exc:
            message = str(exc) or type(exc).__name__
            raise httpx2.ReadError(message, request=response.request) from exc
        if not chunk:  # closed early: the caller sees the body cut short
            return
        left -= len(chunk)
        yield chunk
