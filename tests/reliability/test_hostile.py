"""Hostile input against a real server: slow bodies, header floods, oversize bodies, forged,
replayed and cross-account signatures, missing or wrong keys. Each gets its documented status and
leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from redis.asyncio import Redis

from tests.api.test_receiver import inbox_len, send, signed
from tests.conftest import Stack


def _raw_exchange(port: int, payload: bytes, pause_after: int | None = None, pause: float = 0.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if pause_after is None:
            sock.sendall(payload)
        else:
            sock.sendall(payload[:pause_after])
            import time

            time.sleep(pause)
            with contextlib.suppress(OSError):
                sock.sendall(payload[pause_after:])
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


async def test_slow_body_gets_408_and_stores_nothing(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False, GATEWAY_BODY_READ_TIMEOUT=0.5)
    body = b"api_id=slow"
    head = (
        b"POST /callbacks/plivo HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    )
    answer = await asyncio.to_thread(_raw_exchange, stack.gateway.port, head + body, len(head) + 3, 1.5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b'"error"' in answer
    assert await inbox_len(redis, stack) == 0


async def test_header_flood_is_refused_without_a_500(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False)
    flood = b"".join(f"X-Flood-{i}: {'a' * 100}\r\n".encode() for i in range(2000))
    request = (
        b"POST /callbacks/plivo HTTP/1.1\r\nHost: x\r\n"
        + flood
        + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    answer = await asyncio.to_thread(_raw_exchange, stack.gateway.port, request)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    assert status in (0, 400, 403, 413, 431), answer[:80]  # refused or connection dropped, never 5xx
    assert await inbox_len(redis, stack) == 0


async def test_cross_account_and_replayed_signatures(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False)
    params = {"api_id": "x1", "message": "call fired"}
    other_account = signed(stack, params, token="token-of-another-account")
    assert (await send(stack, other_account)).status_code == 403
    as_main = signed(stack, params, token="token-of-another-account", header="X-Plivo-Signature-Ma-V3")
    assert (await send(stack, as_main)).status_code == 403  # no main-account token configured here
    good = signed(stack, params, nonce="777")
    assert (await send(stack, good)).status_code == 200
    assert (await send(stack, good)).status_code == 403  # the very same request again
    assert await inbox_len(redis, stack) == 1


async def test_api_without_or_with_wrong_key(stack: Stack) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        for method, path in (("POST", "/v1/requests"), ("GET", "/v1/requests"), ("GET", "/v1/subscriptions")):
            response = await stack.client.request(method, stack.gateway.url + path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert set(response.json()) == {"api_id", "error"}
