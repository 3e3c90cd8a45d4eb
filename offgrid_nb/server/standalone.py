"""``offgrid serve``: the ``/v1`` handlers as a standalone Tornado app, for scripts written
against OffGrid LLM (port 11611).

Why a plain ``tornado.web.Application`` and not a minimal Jupyter ``ServerApp``: a ServerApp
also mounts Jupyter's own API (contents, kernels, terminals: file access and code execution)
on the port, starts kernel and session managers, and answers a missing token with 403, cookies
and a login page. The handler classes are the very ones Jupyter mounts (they derive from
jupyter_server's ``APIHandler``); what differs is only what they read from the application
settings: our identity provider (``Authorization: Bearer``, else 401), an allow-all
authorizer, and the Host check, relaxed only when bound to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import sys
from typing import Any

from jupyter_server.auth import AllowAllAuthorizer, IdentityProvider, User
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from ..errors import InvalidArgumentError
from . import ollama
from .config import OffgridAPI
from .handlers import NotFoundHandler, routes
from .state import ApiState

DEFAULT_PORT = 11611


class BearerTokenIdentityProvider(IdentityProvider):
    """With a token, every request needs ``Authorization: Bearer <token>`` (else 401); without
    one, every request is let in (meant for loopback only)."""

    def get_user(self, handler: web.RequestHandler) -> User:
        """The caller, or :class:`tornado.web.HTTPError` 401."""
        if not self.token:
            return User("local")
        scheme, _, given = handler.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            handler._token_authenticated = True  # type: ignore[attr-defined]  # as Jupyter does
            return User("token")
        raise web.HTTPError(401, "Missing or wrong token: send Authorization: Bearer <token>")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "" (every interface)
        return False


def make_app(
    api: ApiState, *, token: str | None = None, allow_remote_access: bool = False
) -> web.Application:
    """The standalone application: every endpoint at ``/v1/...`` and the Ollama-compatible
    ones at ``/api/...``, not listening yet."""
    identity = BearerTokenIdentityProvider(token=token or "")
    settings: dict[str, Any] = {
        "base_url": "/",
        "identity_provider": identity,
        "authorizer": AllowAllAuthorizer(identity_provider=identity),
        "allow_remote_access": allow_remote_access,
        # Requests with the token skip XSRF checks (as in Jupyter). Without a token there is
        # no cookie to forge, and other sites' pages are still refused by the Origin check.
        "disable_check_xsrf": True,
    }
    return web.Application(
        routes("/", api) + ollama.routes("/", api),
        default_handler_class=NotFoundHandler,
        default_handler_args={"api": api},
        **settings,
    )


def _listen(host: str, port: int) -> list[Any]:
    try:
        return bind_sockets(port, host or None)
    except OSError as exc:
        message = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        raise InvalidArgumentError(message, hint="is another server using it?") from exc


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host or '0.0.0.0'}:{port}"


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    config: OffgridAPI | None = None,
    ollama_port: int | None = None,
) -> None:
    """Serve the ``/v1`` and ``/api`` endpoints until Ctrl+C (blocking); prints the URL.

    Args:
        host: address to bind (loopback by default); another address without a token prints
            a warning.
        port: port to listen on (0 picks a free one).
        token: require ``Authorization: Bearer <token>`` on every request.
        config: settings (models folder, limits); defaults otherwise.
        ollama_port: also listen there (11434 is Ollama's), so Ollama's clients need no change.

    Raises:
        InvalidArgumentError: ``host:port`` cannot be listened on.
    """
    remote = not is_loopback(host)
    if remote and not token:
        print(
            f"warning: serving on {host or 'every interface'} without a token: anyone who can "
            "reach it can use your models and downloads; pass --token",
            file=sys.stderr,
            flush=True,
        )
    app = make_app(
        ApiState.from_config(config or OffgridAPI()), token=token, allow_remote_access=remote
    )
    sockets = _listen(host, port)
    url = _url(host, sockets[0].getsockname()[1])
    print(f"offgrid API on {url}/v1 (OpenAI base_url: {url}/v1; Ollama: {url})", flush=True)
    if ollama_port is not None:
        extra = _listen(host, ollama_port)
        sockets += extra
        print(f"Ollama-compatible API also on {_url(host, extra[0].getsockname()[1])}")

    async def main() -> None:
        server = HTTPServer(app)
        server.add_sockets(sockets)
        try:
            await asyncio.Event().wait()
        finally:
            server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
