"""The delivery store's scripts against a real Redis, with an injected clock (epoch ms).

Each concurrency test fires many calls at once over separate connections: a read-then-write in
Python instead of one script would grant more than the limit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.embedded_redis import EmbeddedRedis
from gateway.store.delivery import BreakerPolicy, DeliveryQuery, DeliveryStore

POLICY = BreakerPolicy(
    window_ms=10_000, min_requests=4, failure_rate=0.5, cooldown_ms=5_000, disable_after_ms=60_000
)
T0 = 1_800_000_000_000


@pytest.fixture
async def dstore(redis: Redis) -> DeliveryStore:
    return DeliveryStore(redis, f"d{uuid.uuid4().hex[:6]}:", retention=3600)


@pytest.fixture
async def clients(redis_server: EmbeddedRedis) -> AsyncIterator[list[Redis]]:
    pool = [Redis.from_url(redis_server.url, decode_responses=True) for _ in range(8)]
    yield pool
    for client in pool:
        await client.aclose()


async def new_sub(dstore: DeliveryStore, types: list[str] | None = None) -> str:
    record = await dstore.create_subscription(
        url="http://h/x", event_types=types or ["*"], description="", retry_schedule=None, rate_limit=None
    )
    return record["id"]


async def admit(d: DeliveryStore, sub: str, now: int, **kw: Any) -> Any:
    args = {"rate": 1000.0, "burst": 1000, "cap": 1000, "slot_ttl_ms": 15_000, "concurrency_wait_ms": 250}
    args.update(kw)
    return await d.admit(sub, now=now, **args)


async def test_breaker_opens_probes_and_closes(dstore: DeliveryStore) -> None:
    sub = await new_sub(dstore)
    for i in range(4):
        admission, token = await admit(dstore, sub, T0 + i)
        assert admission.allowed
        state = await dstore.settle(sub, token, ok=i == 0, gone=False, policy=POLICY, now=T0 + i)
    assert state == "open"  # 3 of 4 failed: at least 50 %
    refused, _ = await admit(dstore, sub, T0 + 1000)
    assert (refused.allowed, refused.reason) == (False, "breaker_open")
    assert 3_900 <= refused.wait_ms <= 5_000
    probe, token = await admit(dstore, sub, T0 + 5_100)  # cooldown over: one probe
    assert (probe.allowed, probe.reason) == (True, "probe")
    other, _ = await admit(dstore, sub, T0 + 5_101)
    assert (other.allowed, other.reason) == (False, "breaker_probing")
    assert await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=T0 + 5_200) == "open"
    probe, token = await admit(dstore, sub, T0 + 10_300)
    assert probe.reason == "probe"
    assert await dstore.settle(sub, token, ok=True, gone=False, policy=POLICY, now=T0 + 10_400) == "closed"
    after, _ = await admit(dstore, sub, T0 + 10_500)
    assert after.allowed and after.reason == "ok"


async def test_too_few_requests_do_not_open_the_breaker(dstore: DeliveryStore) -> None:
    sub = await new_sub(dstore)
    for i in range(3):
        _, token = await admit(dstore, sub, T0 + i)
        assert await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=T0 + i) == "closed"


async def test_token_bucket_is_shared_and_atomic(dstore: DeliveryStore, clients: list[Redis]) -> None:
    sub = await new_sub(dstore)
    stores = [DeliveryStore(c, dstore.prefix, retention=3600) for c in clients]
    answers = await asyncio.gather(*(admit(stores[i % 8], sub, T0, rate=2.0, burst=5) for i in range(60)))
    assert sum(a.allowed for a, _ in answers) == 5
    refused = [a for a, _ in answers if not a.allowed]
    assert {a.reason for a in refused} == {"rate_limited"} and all(a.wait_ms == 500 for a in refused)
    later, _ = await admit(dstore, sub, T0 + 1000, rate=2.0, burst=5)  # 1 s refills 2 tokens
    again, _ = await admit(dstore, sub, T0 + 1000, rate=2.0, burst=5)
    third, _ = await admit(dstore, sub, T0 + 1000, rate=2.0, burst=5)
    assert (later.allowed, again.allowed, third.allowed) == (True, True, False)


async def test_concurrency_cap_is_atomic(dstore: DeliveryStore, clients: list[Redis]) -> None:
    sub = await new_sub(dstore)
    stores = [DeliveryStore(c, dstore.prefix, retention=3600) for c in clients]
    answers = await asyncio.gather(*(admit(stores[i % 8], sub, T0, cap=3) for i in range(40)))
    granted = [token for a, token in answers if a.allowed]
    assert len(granted) == 3
    assert {a.reason for a, _ in answers if not a.allowed} == {"concurrency"}
    await dstore.settle(sub, granted[0], ok=True, gone=False, policy=POLICY, now=T0 + 1)
    freed, _ = await admit(dstore, sub, T0 + 2, cap=3)
    assert freed.allowed
    # A slot of a worker that died expires with its TTL.
    late, _ = await admit(dstore, sub, T0 + 16_000, cap=3)
    assert late.allowed


async def test_failing_for_too_long_disables_once(dstore: DeliveryStore, redis: Redis) -> None:
    sub = await new_sub(dstore, ["request.completed"])
    assert await dstore.matching_subscriptions("request.completed") == [(sub, "http://h/x")]
    _, token = await admit(dstore, sub, T0)
    assert await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=T0) == "closed"
    _, token = await admit(dstore, sub, T0 + 30_000)
    await dstore.settle(sub, token, ok=True, gone=False, policy=POLICY, now=T0 + 30_000)  # resets
    _, token = await admit(dstore, sub, T0 + 40_000)
    await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=T0 + 40_000)
    _, token = await admit(dstore, sub, T0 + 90_000)
    assert await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=T0 + 90_000) != "disabled"
    _, token = await admit(dstore, sub, T0 + 100_000)
    assert (
        await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=T0 + 100_000) == "disabled"
    )
    record = await dstore.get_subscription(sub)
    assert record is not None and record["status"] == "disabled"
    assert await dstore.matching_subscriptions("request.completed") == []
    ops = await redis.xrange(dstore.key("ops"))
    assert [e[1]["subscription"] for e in ops] == [sub]
    _, token = await admit(dstore, sub, T0 + 200_000)
    assert (
        await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=T0 + 200_000) != "disabled"
    )


async def test_rearm_is_atomic_one_new_cycle_one_job(dstore: DeliveryStore, clients: list[Redis]) -> None:
    await dstore.emit(
        {"id": "evt_r", "type": "request.completed"}, [("dlv_r", {"type": "webhook", "url": "u"})]
    )
    await dstore.record("dlv_r", cycle=0, status="failed", attempts=1, code=500, error="x")
    stores = [DeliveryStore(c, dstore.prefix, retention=3600) for c in clients]
    results = await asyncio.gather(*(stores[i % 8].rearm("dlv_r") for i in range(30)))
    assert sorted(results).count(1) == 1 and set(results) == {1, -1}
    assert await dstore.redis.zrange(dstore.queue, 0, -1) == ["dlv_r:c1:a1"]
    total, ids = await dstore.query(DeliveryQuery(status="pending"))
    assert (total, ids) == (1, ["dlv_r"])
    assert (await dstore.query(DeliveryQuery(status="failed")))[0] == 0


async def test_retention_trims_indexes_without_scanning(dstore: DeliveryStore) -> None:
    old, new = T0, T0 + 3_600_000 + 1_000  # retention is one hour
    await dstore.emit({"id": "evt_old", "type": "call.status"}, [("dlv_old", {"url": "u"})], now=old)
    await dstore.emit({"id": "evt_new", "type": "call.status"}, [("dlv_new", {"url": "u"})], now=new)
    assert await dstore.query(DeliveryQuery(), now=new) == (1, ["dlv_new"])
    assert await dstore.redis.zrange(dstore.key("deliveries"), 0, -1) == ["dlv_new"]
    assert await dstore.redis.ttl(dstore.key("dlv", "dlv_new")) > 3500
    assert await dstore.redis.ttl(dstore.key("evt", "evt_new")) > 3500


async def test_query_filters_combine(dstore: DeliveryStore) -> None:
    sub = await new_sub(dstore)
    target = {"type": "webhook", "url": "u", "subscription": sub}
    await dstore.emit({"id": "e1", "type": "call.status"}, [("d1", target), ("d2", {"url": "u"})], now=T0)
    await dstore.emit({"id": "e2", "type": "message.status"}, [("d3", target)], now=T0 + 10)
    await dstore.record("d1", cycle=0, status="failed", attempts=1, code=500, error="x")
    q = DeliveryQuery
    assert await dstore.query(q(subscription=sub), now=T0) == (2, ["d3", "d1"])
    assert await dstore.query(q(subscription=sub, status="failed"), now=T0) == (1, ["d1"])
    assert await dstore.query(q(event_type="call.status"), now=T0) == (2, ["d2", "d1"])
    assert await dstore.query(q(subscription=sub, event_type="message.status"), now=T0) == (1, ["d3"])
    assert await dstore.query(q(since_ms=T0 + 5), now=T0) == (1, ["d3"])
    assert await dstore.query(q(until_ms=T0 + 5, limit=1, offset=1), now=T0) == (2, ["d1"])
