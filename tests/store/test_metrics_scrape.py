"""/metrics at scale and behind a token: what one scrape costs Redis, counted, not timed, and who
may scrape.

Costs are counted with ``INFO commandstats`` deltas on the test's own redis-server (commands a
Lua script runs are counted there too), so the figure is exact and the same on any machine.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.store.delivery import BreakerPolicy
from gateway.store.ops import OpsStore
from tests.api.test_metrics import samples, value
from tests.conftest import Stack
from tests.support.store import DeliveryStore
from tooling.embedded_redis import EmbeddedRedis

POLICY = BreakerPolicy(
    window_ms=10_000, min_requests=2, failure_rate=0.5, cooldown_ms=5_000, disable_after_ms=3_600_000
)
T0 = 1_800_000_000_000
BREAKERS = "callback_gateway_circuit_breakers"


async def commands_run(redis: Redis) -> int:
    """Commands the server has run so far, the INFO calls that measure it left out."""
    stats: dict[str, dict[str, Any]] = await redis.info("commandstats")
    return sum(int(s["calls"]) for name, s in stats.items() if name != "cmdstat_info")


async def scrape_cost(ops: OpsStore, redis: Redis) -> int:
    await ops.gauges(10)  # scripts loaded, connections open: count the steady state
    before = await commands_run(redis)
    await ops.gauges(10)
    return await commands_run(redis) - before


async def add_subs(dstore: DeliveryStore, n: int) -> list[str]:
    async def one() -> str:
        sub = await dstore.create_subscription(
            url="http://h/x", event_types=["*"], description="", retry_schedule=None, rate_limit=None
        )
        return sub.id

    ids: list[str] = []
    for start in range(0, n, 200):
        ids += await asyncio.gather(*(one() for _ in range(min(200, n - start))))
    return ids


async def open_breaker(dstore: DeliveryStore, sub: str, now: int = T0) -> str:
    state = ""
    for i in range(2):
        admission, token = await dstore.admit(
            sub, rate=1000.0, burst=1000, cap=1000, slot_ttl_ms=15_000, concurrency_wait_ms=250, now=now + i
        )
        assert admission.allowed
        state = await dstore.settle(sub, token, ok=False, gone=False, policy=POLICY, now=now + i)
    return state


async def test_a_scrape_costs_the_same_whatever_the_number_of_subscriptions(redis: Redis) -> None:
    prefix = f"s{uuid.uuid4().hex[:6]}:"
    dstore = DeliveryStore(redis, prefix, retention=3600)
    ops = OpsStore(redis, prefix)
    subs = await add_subs(dstore, 10)
    assert await open_breaker(dstore, subs[0]) == "open"
    small = await scrape_cost(ops, redis)
    subs += await add_subs(dstore, 1990)
    for sub in subs[1:40]:
        assert await open_breaker(dstore, sub) == "open"
    large = await scrape_cost(ops, redis)
    assert large == small <= 14, f"10 subscriptions: {small} commands, 2,000: {large}"
    gauges = await ops.gauges(10)
    assert gauges.breakers == {"closed": 1960, "open": 40, "half_open": 0}


async def test_the_breaker_gauge_follows_every_transition(redis: Redis) -> None:
    prefix = f"s{uuid.uuid4().hex[:6]}:"
    dstore = DeliveryStore(redis, prefix, retention=3600)
    ops = OpsStore(redis, prefix)

    async def counts() -> dict[str, int]:
        return (await ops.gauges(10)).breakers

    a, b, c = await add_subs(dstore, 3)
    assert await counts() == {"closed": 3, "open": 0, "half_open": 0}
    assert await open_breaker(dstore, a) == "open"
    assert await open_breaker(dstore, b) == "open"
    assert await counts() == {"closed": 1, "open": 2, "half_open": 0}
    probe, token = await dstore.admit(
        a, rate=1000.0, burst=1000, cap=1000, slot_ttl_ms=15_000, concurrency_wait_ms=250, now=T0 + 6_000
    )
    assert probe.reason == "probe"
    assert await counts() == {"closed": 1, "open": 1, "half_open": 1}
    assert await dstore.settle(a, token, ok=True, gone=False, policy=POLICY, now=T0 + 6_001) == "closed"
    assert await counts() == {"closed": 2, "open": 1, "half_open": 0}
    assert await dstore.delete_subscription(b)
    assert await counts() == {"closed": 2, "open": 0, "half_open": 0}
    assert await open_breaker(dstore, c, T0 + 7_000) == "open"
    await redis.hset(f"{prefix}sub:{c}", "status", "disabled")  # type: ignore[misc]
    assert await dstore.enable_subscription(c) == 1  # a fresh breaker
    assert await counts() == {"closed": 2, "open": 0, "half_open": 0}
    assert [await dstore.breaker_state(s) for s in (a, c)] == ["closed", "closed"]


async def test_the_index_agrees_with_the_breakers_under_concurrent_attempts(
    redis: Redis, redis_server: EmbeddedRedis
) -> None:
    """Attempts on the same breakers settled at once over separate connections, checked after
    every round: were the index written apart from the breaker (from what a script returned, say),
    two transitions racing would leave it counting a state the breaker no longer has."""
    prefix = f"s{uuid.uuid4().hex[:6]}:"
    clients = [Redis.from_url(redis_server.url, decode_responses=True) for _ in range(8)]
    stores = [DeliveryStore(c, prefix, retention=3600) for c in clients]
    ops = OpsStore(redis, prefix)
    subs = await add_subs(stores[0], 3)
    rng = random.Random(7)
    seen: Counter[str] = Counter()

    async def slot(i: int, sub: str, now: int) -> tuple[str, str] | None:
        admission, token = await stores[i % 8].admit(
            sub, rate=1000.0, burst=1000, cap=1000, slot_ttl_ms=15_000, concurrency_wait_ms=250, now=now
        )
        return (sub, token) if admission.allowed else None

    async def settle(i: int, sub: str, token: str, now: int) -> None:
        ok = rng.random() < 0.5
        await stores[i % 8].settle(sub, token, ok=ok, gone=False, policy=POLICY, now=now)

    try:
        for round_ in range(60):
            now = T0 + round_ * 3_000  # a cooldown (5 s) passes every other round: probes
            held = await asyncio.gather(*(slot(i, subs[i % 3], now) for i in range(24)))
            slots = [h for h in held if h is not None]
            await asyncio.gather(*(settle(i, sub, token, now + 1) for i, (sub, token) in enumerate(slots)))
            states = [await stores[0].breaker_state(sub) for sub in subs]
            seen.update(states)
            truth = {"closed": 0, "open": 0, "half_open": 0, **Counter(states)}
            assert (await ops.gauges(10)).breakers == truth, f"round {round_}"
    finally:
        for client in clients:
            await client.aclose()
    assert seen["open"] and seen["closed"]  # the mix went both ways


async def test_a_breaker_whose_hash_expired_counts_as_closed(redis: Redis) -> None:
    """The breaker hash has a TTL (window + cooldown + 1 h) and a hash that expires is a closed
    breaker: the index entry is scored by that same expiry, on Redis's clock."""
    prefix = f"s{uuid.uuid4().hex[:6]}:"
    dstore = DeliveryStore(redis, prefix, retention=3600)
    ops = OpsStore(redis, prefix)
    (sub,) = await add_subs(dstore, 1)
    assert await open_breaker(dstore, sub) == "open"
    expires_at = await redis.execute_command("PEXPIRETIME", f"{prefix}breaker:{sub}")
    score = await redis.zscore(f"{prefix}breakers:open", sub)
    assert score is not None and abs(score - expires_at) <= 5
    # An hour later, as the server sees it: the hash is gone and its entry's score is past.
    await redis.delete(f"{prefix}breaker:{sub}")
    await redis.zadd(f"{prefix}breakers:open", {sub: expires_at - 4_000_000})
    assert (await ops.gauges(10)).breakers == {"closed": 1, "open": 0, "half_open": 0}
    assert await open_breaker(dstore, sub, T0 + 100_000) == "open"  # and it can open again
    assert (await ops.gauges(10)).breakers == {"closed": 0, "open": 1, "half_open": 0}


TOKEN = "scrape-" + uuid.uuid4().hex


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer test-key-1234567890"],
    ids=["absent", "empty", "no-token", "wrong", "basic-scheme", "longer", "an-api-key"],
)
async def test_metrics_need_the_token_when_one_is_set(
    stack_factory: Callable[..., Any], capfd: pytest.CaptureFixture[str], authorization: str | None
) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_METRICS_TOKEN=TOKEN, LOG_LEVEL="DEBUG")
    headers = {} if authorization is None else {"Authorization": authorization}
    refused = await stack.client.get(stack.gateway.url + "/metrics", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    body = refused.json()
    assert set(body) == {"api_id", "error"} and body["api_id"]
    assert TOKEN not in refused.text and "callback_gateway" not in refused.text
    allowed = await stack.client.get(
        stack.gateway.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert allowed.status_code == 200
    assert value(samples(allowed.text), BREAKERS, state="closed") == 0
    assert ("callback_gateway_pending_requests", ()) in samples(allowed.text)
    out, err = capfd.readouterr()
    assert TOKEN not in out + err


async def test_metrics_stay_open_without_a_token(stack_factory: Callable[..., Any]) -> None:
    stack: Stack = await stack_factory(worker=False)
    for headers in ({}, {"Authorization": "Bearer anything"}):
        response = await stack.client.get(stack.gateway.url + "/metrics", headers=headers)
        assert response.status_code == 200 and "callback_gateway_pending_requests" in response.text
