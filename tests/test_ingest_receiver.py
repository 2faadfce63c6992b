"""The receiver's own ASGI path: what the router still serves, disconnects, and the shared
round trips of concurrent ingests (against a real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from gateway.api.routes.receiver import AutoPipeline
from gateway.app import create_app
from gateway.embedded_redis import free_port
from gateway.settings import Settings
from gateway.signing import sign_v3
from gateway.state import make_store
from tests.test_receiver import inbox_len, send, signed


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


async def test_concurrent_ingests_share_round_trips_and_keep_their_answers(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings()
    client = Redis.from_url(settings.REDIS_URL, decode_responses=True, client_name="autopipe-test")
    store = make_store(settings, AutoPipeline(client.connection_pool))
    try:
        firsts = [store.ingest(f"cb{i}", f'{{"n": {i}}}', f"nonce{i}") for i in range(200)]
        retries = [store.ingest(f"cb{i}", f'{{"n": {i}}}', f"retry{i}") for i in range(100)]
        replays = [store.ingest(f"cb{i}", f'{{"n": {i}}}', f"nonce{i}") for i in range(150, 200)]
        results = await asyncio.gather(*firsts, *retries, *replays)
        assert results == [1] * 200 + [0] * 100 + [-1] * 50
        assert await redis.xlen(settings.GATEWAY_KEY_PREFIX + "inbox") == 200
        # 350 concurrent scripts went over one connection: they shared round trips.
        clients = await redis.client_list()
        assert sum(1 for c in clients if c["name"] == "autopipe-test") == 1
        # A flushed script cache is reloaded on the fly, as with a plain client.
        await redis.script_flush()
        assert await store.ingest("cb-after-flush", "{}", "") == 1
    finally:
        await client.aclose()


async def test_one_failing_command_does_not_fail_its_batch(redis: Redis, redis_server: Any) -> None:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    pipe = AutoPipeline(client.connection_pool)
    try:
        await redis.set("not-a-number", "abc")
        results = await asyncio.gather(
            pipe.incr("counter"), pipe.incr("not-a-number"), pipe.incr("counter"), return_exceptions=True
        )
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], ResponseError)
    finally:
        await client.aclose()


async def test_redis_down_fails_every_waiting_command() -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    pipe = AutoPipeline(client.connection_pool)
    try:
        results = await asyncio.gather(*(pipe.incr("k") for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, RedisError) for r in results), results
        with pytest.raises(RedisError):
            await pipe.incr("k")  # and the next one still gets an answer, not a hang
    finally:
        await client.aclose()
