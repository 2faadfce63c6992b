"""How ``serve`` listens: uvicorn with a header deadline, a connection cap and an optional admin port.

* **Header deadline** (``GATEWAY_HEADER_TIMEOUT``): uvicorn bounds nothing between a connection's
  first byte and the end of its headers, and a new connection that sends nothing is kept until
  the client goes (its keep-alive timer only starts after a response). A client trickling headers
  could so hold connections forever (slowloris). ``HeaderDeadlineProtocol`` closes a connection
  whose request headers are not complete that many seconds after it opened or its previous
  response ended. Bodies have their own deadline (``GATEWAY_BODY_READ_TIMEOUT``, gateway.api.body).
* **Connection cap** (``GATEWAY_MAX_CONNECTIONS``): uvicorn's ``limit_concurrency``; past it a
  request is answered 503 (Plivo retries callbacks).
* **Admin port** (``GATEWAY_ADMIN_PORT``): both ports are bound here and served by the same
  processes; the application (gateway.api.app) serves only the receiver and health on the public one.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from gateway.settings import Settings


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request headers come too slowly."""

    # Set from the settings in each server process (``configure``), before it accepts connections.
    header_timeout: float = 10.0

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle keep-alive is uvicorn's (timeout_keep_alive); a next request, once its first byte
        # comes, has header_timeout seconds again (on_message_begin).
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def configure(settings: Settings) -> None:
    """Apply the settings the protocol reads (each server process builds its app from them)."""
    HeaderDeadlineProtocol.header_timeout = settings.GATEWAY_HEADER_TIMEOUT


def bind(host: str, port: int) -> socket.socket:
    """A listening socket as uvicorn binds one (so that worker processes can share it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def run(settings: Settings, host: str, port: int, workers: int, **options: Any) -> None:
    """Serve ``gateway.cli:app_from_env`` on ``port`` (and ``GATEWAY_ADMIN_PORT``, if set)."""
    config = uvicorn.Config(
        "gateway.cli:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=HeaderDeadlineProtocol,
        limit_concurrency=settings.GATEWAY_MAX_CONNECTIONS,
        **options,
    )
    sockets = [bind(host, port)]
    if settings.GATEWAY_ADMIN_PORT:
        sockets.append(bind(host, settings.GATEWAY_ADMIN_PORT))
    if workers > 1:
        Multiprocess(config, sockets=sockets).run()
    else:
        uvicorn.Server(config).run(sockets=sockets)
