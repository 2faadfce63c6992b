"""History: what the worker's archiver copies from Redis to PostgreSQL, and what Redis then forgets."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.support.receiver import wait_until

pytestmark = pytest.mark.history_writer_process

MESSAGE = {"src": "14155550100", "dst": "14155550123", "text": "hi"}


async def submit_message(stack: Stack, **extra: Any) -> str:
    # Status callbacks spaced out, as Plivo's are: a burst right behind the result can overtake it
    # in the worker and be dropped as out of order (issue 19's ordering), which is not tested here.
    await stack.configure_sandbox(status_spacing=0.05)
    response = await stack.submit(
        {
            "resource": "Message/",
            "params": MESSAGE,
            "targets": [{"type": "webhook", "url": stack.hook_url()}],
            "metadata": {"order_id": 7},
            "status_events": True,
            **extra,
        }
    )
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["api_id"])


async def db(stack: Stack) -> asyncpg.Connection:
    assert stack.settings.DATABASE_URL is not None
    return await asyncpg.connect(stack.settings.DATABASE_URL.get_secret_value())


async def archived(stack: Stack, redis: Redis) -> bool:
    return int(await redis.zcard(stack.settings.GATEWAY_KEY_PREFIX + "archive")) == 0


async def test_a_message_with_status_callbacks_is_copied_whole(stack: Stack, redis: Redis) -> None:
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: archived(stack, redis))
    conn = await db(stack)
    try:
        request = await conn.fetchrow(
            "SELECT status, metadata, record FROM requests WHERE api_id = $1", api_id
        )
        assert request is not None and request["status"] == "completed"
        assert request["metadata"] == '{"order_id": 7}'
        types = [r["type"] for r in await conn.fetch("SELECT type FROM events WHERE api_id = $1", api_id)]
        assert sorted(types) == ["message.status"] * 3 + ["request.completed"]
        deliveries = await conn.fetch("SELECT status FROM deliveries WHERE api_id = $1", api_id)
        assert [d["status"] for d in deliveries] == ["succeeded"] * 4
        attempts = await conn.fetch("SELECT status_code, target FROM attempts WHERE api_id = $1", api_id)
        assert len(attempts) == 4 and {a["status_code"] for a in attempts} == {200}
        assert {a["target"] for a in attempts} == {stack.hook_url()}
    finally:
        await conn.close()


async def test_a_settled_request_leaves_redis_after_the_hot_retention(
    stack_factory: Any, redis: Redis
) -> None:
    stack: Stack = await stack_factory(GATEWAY_HOT_RETENTION=1)
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: archived(stack, redis))
    prefix = stack.settings.GATEWAY_KEY_PREFIX

    async def gone() -> bool:
        left = [k async for k in redis.scan_iter(match=prefix + "*") if not k.startswith(prefix + "req:")]
        return not [k for k in left if k.split(":")[1] in ("evt", "evtdlv", "dlv", "dlvlog", "reqevents")]

    await wait_until(gone, timeout=5)
    # The request record stays (late status callbacks find it), without its result payload.
    record = await redis.hgetall(prefix + "req:" + api_id)
    assert record["h"] == "1" and "x" not in record
    # The indexes no longer list it: lists read PostgreSQL.
    assert await redis.zscore(prefix + "requests:completed", api_id) is None
    assert await redis.zcard(prefix + "deliveries") == 0


async def test_what_redis_held_before_history_existed_is_copied_once(
    stack_factory: Any, redis: Redis
) -> None:
    stack: Stack = await stack_factory(worker=False)
    prefix = stack.settings.GATEWAY_KEY_PREFIX
    api_ids = [await submit_message(stack) for _ in range(3)]
    # As an older version left it: the requests in Redis, no archive, no backfill flag.
    await redis.delete(prefix + "archive")
    assert not await redis.exists(prefix + "archive_backfilled")
    stack.start_worker()
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 12)
    await wait_until(lambda: archived(stack, redis))
    assert await redis.exists(prefix + "archive_backfilled")
    conn = await db(stack)
    try:
        rows = await conn.fetch("SELECT api_id FROM requests WHERE api_id = ANY($1)", api_ids)
        assert {r["api_id"] for r in rows} == set(api_ids)
    finally:
        await conn.close()
