"""The delivery store's scripts against a real Redis, with an injected clock (epoch ms).

Each concurrency test fires many calls at once over separate connections: a read-then-write in
Python instead of one script would grant more than the limit.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.domain.events import Event
from gateway.domain.targets import WebhookTarget
from gateway.settings import Settings
from gateway.store.delivery import AttemptLimits, AttemptRecord, BreakerPolicy, DeliveryQuery
from tests.support.store import DeliveryStore
from tooling.embedded_redis import EmbeddedRedis
from workers.delivery import refused_wait_ms, run_begun

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
    sub = await dstore.create_subscription(
        url="http://h/x", event_types=types or ["*"], description="", retry_schedule=None, rate_limit=None
    )
    return sub.id


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
    found = await dstore.get_subscription(sub)
    assert found is not None and found.status == "disabled"
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


LIMITS = AttemptLimits(lease_ttl_ms=15_000, rate=1000.0, burst=1000, cap=1000, concurrency_wait_ms=250)


async def emitted(dstore: DeliveryStore, n: int = 1, sub: str = "") -> list[str]:
    """An event with ``n`` deliveries (to ``sub`` when given); their ids."""
    event = {"id": f"evt_{uuid.uuid4().hex[:8]}", "type": "request.completed", "api_id": ""}
    targets = [
        (f"dlv_{uuid.uuid4().hex[:8]}", {"type": "webhook", "url": "http://h/x", "subscription": sub})
        for _ in range(n)
    ]
    await dstore.emit(event, targets, now=T0)
    return [d for d, _ in targets]


def succeeded(attempts: int = 1) -> AttemptRecord:
    return AttemptRecord("succeeded", attempts, 200, "", {"attempt": attempts})


async def test_begin_takes_one_attempt_once_whatever_the_race(
    dstore: DeliveryStore, clients: list[Redis]
) -> None:
    # Workers racing for attempt 1 of the same delivery while one of them makes it (a 2 ms send,
    # then finish): exactly one attempt is made. Checking the record and taking the lease in two
    # steps lets a worker that read "attempts: 0" just before the finish take the lease just
    # after it, and attempt again (checked: the earlier read-then-SET-NX made a second attempt in
    # 18 of these 40 rounds).
    stores = [DeliveryStore(c, dstore.prefix, retention=3600) for c in clients]
    rng = random.Random(7)

    async def one(store: DeliveryStore, dlv: str, delay: float, made: list[str]) -> None:
        await asyncio.sleep(delay)
        begun = await store.begin(dlv, 0, 1, LIMITS, now=T0)
        if begun.state == "go":
            made.append(begun.token)
            await asyncio.sleep(0.002)  # the send
            await store.finish(dlv, begun, succeeded(), now=T0)

    for _ in range(40):
        (dlv,) = await emitted(dstore)
        made: list[str] = []
        delays = [0.0] + [rng.uniform(0, 0.005) for _ in stores[1:]]
        await asyncio.gather(*(one(s, dlv, d, made) for s, d in zip(stores, delays, strict=True)))
        assert len(made) == 1
        record = await dstore.get_delivery(dlv)
        assert (record["status"], record["attempts"]) == ("succeeded", "1")
        assert await dstore.redis.exists(dstore.key("lease", dlv)) == 0


async def test_finish_gives_back_only_its_own_lease(dstore: DeliveryStore, redis: Redis) -> None:
    (dlv,) = await emitted(dstore)
    begun = await dstore.begin(dlv, 0, 1, LIMITS, now=T0)
    assert begun.state == "go"
    # The attempt outlived its lease and another worker holds a new one: a late finish must not
    # free that one (a plain DEL would).
    await redis.set(dstore.key("lease", dlv), "someone-else", px=15_000)
    failure = AttemptRecord("pending", 1, 500, "HTTP 500", None, T0 + 1000)
    assert (await dstore.finish(dlv, begun, failure, now=T0))[0] == "pending"
    assert await redis.get(dstore.key("lease", dlv)) == "someone-else"
    again = await dstore.begin(dlv, 0, 2, LIMITS, now=T0 + 1000)
    assert again.state == "leased"


async def test_refused_admission_takes_nothing(dstore: DeliveryStore, redis: Redis) -> None:
    sub = await new_sub(dstore)
    first, second = await emitted(dstore, 2, sub)
    capped = AttemptLimits(lease_ttl_ms=15_000, rate=1000.0, burst=1000, cap=1, concurrency_wait_ms=250)
    held = await dstore.begin(first, 0, 1, capped, now=T0)
    assert held.state == "go"
    refused = await dstore.begin(second, 0, 1, capped, now=T0)
    assert (refused.state, refused.reason, refused.wait_ms) == ("refused", "concurrency", 250)
    assert await redis.exists(dstore.key("lease", second)) == 0  # the lease was given back
    # The slot comes back with the finish of the first: now the second may go.
    await dstore.finish(first, held, succeeded(), sub=sub, breaker=POLICY, ok=True, now=T0 + 1)
    assert (await dstore.begin(second, 0, 1, capped, now=T0 + 2)).state == "go"


async def test_begin_abandons_for_a_deleted_subscription_and_reads_the_event(dstore: DeliveryStore) -> None:
    sub = await new_sub(dstore)
    (dlv,) = await emitted(dstore, 1, sub)
    begun = await dstore.begin(dlv, 0, 1, LIMITS, now=T0, with_event=True)
    assert begun.state == "go" and json.loads(begun.event)["type"] == "request.completed"
    await dstore.finish(
        dlv, begun, AttemptRecord("pending", 1, 503, "HTTP 503", None, T0), sub=sub, breaker=POLICY, now=T0
    )
    await dstore.delete_subscription(sub)
    gone = await dstore.begin(dlv, 0, 2, LIMITS, now=T0)
    assert (gone.state, gone.reason) == ("abandon", "subscription deleted")
    assert (await dstore.begin(dlv, 0, 1, LIMITS, now=T0)).state == "stale"  # attempt 1 happened


async def test_finish_acknowledges_the_inbox_entry_with_the_record(
    dstore: DeliveryStore, redis: Redis
) -> None:
    inbox, group = dstore.key("inbox"), "correlate"
    await redis.xgroup_create(inbox, group, id="0", mkstream=True)
    entry = await redis.xadd(inbox, {"e": "{}"})
    await redis.xreadgroup(group, "c1", {inbox: ">"}, count=1)
    (dlv,) = await emitted(dstore)
    begun = await dstore.begin(dlv, 0, 1, LIMITS, now=T0)
    status, _ = await dstore.finish(dlv, begun, succeeded(), ack=(inbox, group, entry), now=T0)
    assert status == "succeeded"
    assert (await redis.xpending(inbox, group))["pending"] == 0
    assert await redis.xlen(inbox) == 0


async def test_emit_and_begin_starts_only_first_attempts(dstore: DeliveryStore) -> None:
    event = Event.new("evt_once", "request.completed", T0, "a1", {}, None)
    targets = [(f"dlv_{i}", WebhookTarget("http://h/x")) for i in range(2)]
    created, states, begun = await dstore.emit_and_begin(event, targets, LIMITS, now=T0)
    assert created and states == ["pending", "pending"] and [b.state for b in begun] == ["go", "go"]
    await dstore.finish("dlv_0", begun[0], succeeded(), now=T0)
    retry = AttemptRecord("pending", 1, 500, "HTTP 500", None, T0 + 5000)
    await dstore.finish("dlv_1", begun[1], retry, now=T0)
    # The same event again (a reclaimed inbox entry): nothing new is created or attempted.
    created, states, again = await dstore.emit_and_begin(event, targets, LIMITS, now=T0 + 1)
    assert not created and states == ["succeeded", "pending"]
    assert [b.state for b in again] == ["succeeded", "stale"]


async def test_a_retry_renews_its_event_or_refuses_when_it_expired(
    dstore: DeliveryStore, redis: Redis
) -> None:
    (dlv,) = await emitted(dstore)
    begun = await dstore.begin(dlv, 0, 1, LIMITS, now=T0)
    await dstore.finish(dlv, begun, AttemptRecord("failed", 1, 500, "HTTP 500", {"attempt": 1}), now=T0)
    event_id = (await dstore.get_delivery(dlv))["event_id"]
    await redis.expire(dstore.key("evt", event_id), 5)  # near the end of its retention
    assert await dstore.rearm(dlv, now=T0 + 1) == 1
    assert await redis.ttl(dstore.key("evt", event_id)) > 3000  # kept as long as the delivery again
    assert await redis.ttl(dstore.key("dlvlog", dlv)) > 3000
    again = await dstore.begin(dlv, 1, 1, LIMITS, now=T0 + 2, with_event=True)
    await dstore.finish(dlv, again, AttemptRecord("failed", 1, 500, "HTTP 500"), now=T0 + 2)
    await redis.delete(dstore.key("evt", event_id))  # expired after all
    assert await dstore.rearm(dlv, now=T0 + 3) == -4
    assert (await dstore.get_delivery(dlv))["status"] == "failed"  # nothing pending without an event


async def test_a_deleted_subscriptions_index_expires_with_its_deliveries(
    dstore: DeliveryStore, redis: Redis
) -> None:
    sub = await new_sub(dstore)
    await emitted(dstore, 2, sub)
    index = dstore.key("deliveries", "sub", sub)
    assert await redis.ttl(index) == -1
    assert await dstore.delete_subscription(sub)
    assert await redis.zcard(index) == 2  # still listable
    assert 0 < await redis.ttl(index) <= 3600


async def test_the_disable_and_its_announcement_are_one_step(dstore: DeliveryStore, redis: Redis) -> None:
    sub = await new_sub(dstore)
    (dlv,) = await emitted(dstore, 1, sub)
    begun = await dstore.begin(dlv, 0, 1, LIMITS, now=T0)
    gone = AttemptRecord("failed", 1, 410, "HTTP 410", {"attempt": 1})
    job = (dstore.queue, "evt_disabled_1", b"payload")
    status, state = await dstore.finish(
        dlv, begun, gone, sub=sub, breaker=POLICY, gone=True, on_disable=job, now=T0
    )
    assert (status, state) == ("failed", "disabled")
    assert await redis.get("arq:job:evt_disabled_1") == "payload"
    assert await redis.zscore(dstore.queue, "evt_disabled_1") == T0
    # An attempt that does not disable writes no announcement.
    other = await new_sub(dstore)
    (dlv2,) = await emitted(dstore, 1, other)
    begun = await dstore.begin(dlv2, 0, 1, LIMITS, now=T0)
    failing = AttemptRecord("pending", 1, 500, "HTTP 500", None, T0 + 1000)
    job2 = (dstore.queue, "evt_disabled_2", b"payload")
    await dstore.finish(dlv2, begun, failing, sub=other, breaker=POLICY, on_disable=job2, now=T0)
    assert await redis.exists("arq:job:evt_disabled_2") == 0


async def test_enable_brings_a_disabled_subscription_back_in_one_step(
    dstore: DeliveryStore, redis: Redis
) -> None:
    sub = await new_sub(dstore, ["request.completed"])
    _, token = await admit(dstore, sub, T0)
    assert await dstore.settle(sub, token, ok=False, gone=True, policy=POLICY, now=T0) == "disabled"
    assert await dstore.matching_subscriptions("request.completed") == []
    assert await dstore.enable_subscription(sub, now=T0 + 1) == 1
    assert await dstore.matching_subscriptions("request.completed") == [(sub, "http://h/x")]
    found = await dstore.get_subscription(sub)
    assert found is not None and found.status == "active"
    record = await redis.hgetall(dstore.key("sub", sub))
    assert "disabled_reason" not in record and "failing_since" not in record
    assert await dstore.breaker_state(sub) == "closed"
    assert await dstore.enable_subscription(sub) == -1
    assert await dstore.enable_subscription("sub_missing") == 0


async def test_a_full_concurrency_cap_puts_deliveries_off_for_longer_each_time(dstore: DeliveryStore) -> None:
    sub = await new_sub(dstore)
    first, second = await emitted(dstore, 2, sub)
    capped = AttemptLimits(lease_ttl_ms=15_000, rate=1000.0, burst=1000, cap=1, concurrency_wait_ms=250)
    assert (await dstore.begin(first, 0, 1, capped, now=T0)).state == "go"  # holds the only slot
    ctx = SimpleNamespace(settings=Settings(_env_file=None, GATEWAY_DELIVERY_TIMEOUT=10))
    waits = []
    for n in range(8):
        refused = await dstore.begin(second, 0, 1, capped, now=T0 + n)
        assert (refused.state, refused.reason, refused.deferrals) == ("refused", "concurrency", n)
        waits.append(refused_wait_ms(ctx, refused))  # type: ignore[arg-type]
        assert await dstore.defer(second, 0, 1, T0 + waits[-1])
    assert 200 <= waits[0] <= 300 and waits[1] > waits[0] * 1.3
    assert max(waits) <= 2000 * 1.2  # never longer than 2 s (+ jitter)
    assert min(waits[4:]) >= 2000 * 0.8


async def test_a_pending_delivery_keeps_its_event_alive_until_its_next_attempt(
    dstore: DeliveryStore, redis: Redis
) -> None:
    # Retention shorter than the wait for the next attempt (a retry in 2 h, retention 1 h): the
    # record, its log and its event stay until that attempt plus the retention.
    (dlv,) = await emitted(dstore)
    event_id = (await dstore.get_delivery(dlv))["event_id"]
    begun = await dstore.begin(dlv, 0, 1, LIMITS, now=T0)
    retry_at = T0 + 7_200_000
    failing = AttemptRecord("pending", 1, 500, "HTTP 500", {"attempt": 1}, retry_at)
    await dstore.finish(dlv, begun, failing, now=T0)
    for key in (dstore.key("dlv", dlv), dstore.key("dlvlog", dlv), dstore.key("evt", event_id)):
        assert await redis.pttl(key) > 7_200_000 + 3_000_000, key
    # The same when the attempt is put off (admission refused, lease busy), on the caller's clock:
    # until the deferred attempt (10 min after T0) plus the retention (1 h), not longer.
    await redis.pexpire(dstore.key("evt", event_id), 1000)
    assert await dstore.defer(dlv, 0, 2, T0 + 600_000, now=T0)
    assert 600_000 < await redis.pttl(dstore.key("evt", event_id)) <= 600_000 + 3_600_000


async def test_an_event_lost_under_a_pending_delivery_is_a_dead_letter(
    dstore: DeliveryStore, redis: Redis
) -> None:
    (dlv,) = await emitted(dstore)
    await redis.delete(dstore.key("evt", (await dstore.get_delivery(dlv))["event_id"]))
    begun = await dstore.begin(dlv, 0, 1, LIMITS, now=T0, with_event=True)
    assert (begun.state, begun.cycle, begun.attempts) == ("expired", 0, 0)
    ctx = SimpleNamespace(deliveries=dstore, clock=lambda: T0 + 1)
    assert await run_begun(ctx, dlv, {}, begun) == "failed"  # type: ignore[arg-type]
    record = await dstore.get_delivery(dlv)
    assert (record["status"], record["last_error"]) == ("failed", "event expired before delivery")
