"""Our HTTP clients drop an idle connection before a server with a 5 s keep-alive closes it.

Reusing a connection just as the server closes it fails a POST that neither library retries
(gateway/infra/keepalive.py). uvicorn, like Node, closes idle connections after 5 s: after
IDLE_SECONDS and a margin, but before those 5 s, each client must open a new connection (with
httpx's own 5 s or aiohttp's 15 s it would reuse the old one), and within them reuse it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from gateway.infra.keepalive import IDLE_SECONDS
from gateway.services.netguard import Policy, webhook_client
from gateway.services.upstream import upstream_http
from gateway.settings import Settings
from tests.support.servers import ServerThread

SERVER_IDLE = 5.0  # uvicorn's default timeout_keep_alive, which ServerThread keeps


class PortRecorder:
    """An ASGI app answering 200 and noting the client port of each request, by path."""

    def __init__(self) -> None:
        self.ports: dict[str, list[int]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        self.ports.setdefault(scope["path"], []).append(scope["client"][1])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def recorder() -> Iterator[tuple[PortRecorder, str]]:
    app = PortRecorder()
    server = ServerThread(app).start()
    yield app, server.url
    server.stop()


async def _ports(post: Callable[[], Awaitable[None]]) -> list[int]:
    """Client ports of three POSTs: back to back, then after IDLE_SECONDS and a margin."""
    ports = []
    for pause in (0.0, 0.2, IDLE_SECONDS + 0.6):
        await asyncio.sleep(pause)
        ports.append(await post())
    return ports


async def test_idle_connections_are_dropped_before_the_server_closes_them(
    recorder: tuple[PortRecorder, str], make_settings: Callable[..., Settings]
) -> None:
    assert IDLE_SECONDS + 0.6 < SERVER_IDLE
    app, url = recorder

    async def through_httpx() -> list[int]:
        async with upstream_http(make_settings()) as http:

            async def post() -> int:
                (await http.post(url + "/plivo", json={})).raise_for_status()
                return app.ports["/plivo"][-1]

            return await _ports(post)

    async def through_aiohttp() -> list[int]:
        policy = Policy.build(allow_private=True)
        async with webhook_client(policy, timeout=5, max_connections=4) as client:

            async def post() -> int:
                await client.request("POST", url + "/hook", body=b"{}")
                return app.ports["/hook"][-1]

            return await _ports(post)

    for first, second, after_idle in await asyncio.gather(through_httpx(), through_aiohttp()):
        assert first == second, "a connection in use is kept"
        assert after_idle != first, "an idle connection was reused past IDLE_SECONDS"
