"""The receiver's own ASGI path: what the router still serves, disconnects, and concurrent
callbacks sharing Redis round trips (against real servers and a real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
from redis.asyncio import Redis

from gateway.api.app import create_app
from gateway.domain.signing import sign_v3
from gateway.settings import Settings
from tests.api.test_receiver import duplicates_len, inbox_len, send, signed


async def test_other_methods_and_root_path_take_the_router(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(GATEWAY_PUBLIC_URL="https://gw.example.com")
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        put = await client.put("/callbacks/plivo", content=b"x")
        assert put.status_code == 405
        assert set(put.json()) == {"api_id", "error"}
        assert {"GET", "POST"} <= {m.strip() for m in put.headers["allow"].split(",")}
        assert (await client.head("/callbacks/plivo")).status_code == 403  # unsigned
    # Mounted under a root path, the route serves it, signed for the public URL of that path.
    mounted = httpx.ASGITransport(app=app, root_path="/gw")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=mounted, base_url="http://gw") as client,
    ):
        params = {"api_id": "rp1"}
        token = settings.PLIVO_AUTH_TOKEN.get_secret_value()
        sig = sign_v3("POST", "https://gw.example.com/gw/callbacks/plivo", params, "77", token)
        headers = {
            "X-Plivo-Signature-V3": sig,
            "X-Plivo-Signature-V3-Nonce": "77",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        ok = await client.post("/gw/callbacks/plivo", content=urlencode(params), headers=headers)
        assert ok.status_code == 200, ok.text
    assert await redis.xlen(settings.GATEWAY_KEY_PREFIX + "inbox") == 1


def _send_part_and_close(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


async def test_client_gone_before_its_body_stores_nothing(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False)
    head = (
        b"POST /callbacks/plivo HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\napi_id=x"
    )
    await asyncio.to_thread(_send_part_and_close, stack.gateway.port, head)
    await asyncio.sleep(0.2)
    assert (await send(stack, signed(stack, {"api_id": "after"}))).status_code == 200
    assert await inbox_len(redis, stack) == 1


async def test_concurrent_callbacks_each_get_their_own_answer(stack_factory: Any, redis: Redis) -> None:
    """Callbacks arriving together share pipelines; each answer is still its own: stored,
    a duplicate (Plivo's retry, fresh nonce) or a replay (same nonce) refused."""
    stack = await stack_factory(worker=False)
    firsts = [signed(stack, {"api_id": f"c{i}"}, nonce=f"1{i}") for i in range(120)]
    retries = [signed(stack, {"api_id": f"c{i}"}) for i in range(40)]
    replays = [dict(firsts[i]) for i in range(80, 120)]
    answers = await asyncio.gather(*(send(stack, a) for a in firsts))
    assert [a.status_code for a in answers] == [200] * 120
    again = await asyncio.gather(*(send(stack, a) for a in retries + replays))
    assert [a.status_code for a in again] == [200] * 40 + [403] * 40
    assert await inbox_len(redis, stack) == 120
    assert await duplicates_len(redis, stack) == 40
    # A script cache Redis lost (restart, SCRIPT FLUSH) is reloaded on the fly.
    await redis.script_flush()
    late = await asyncio.gather(*(send(stack, signed(stack, {"api_id": f"late{i}"})) for i in range(10)))
    assert [a.status_code for a in late] == [200] * 10
    assert await inbox_len(redis, stack) == 130
