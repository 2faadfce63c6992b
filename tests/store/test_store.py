"""The store's scripts against a real Redis, including races that only atomic scripts survive."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store import INBOX_GROUP, NewRequest, Store
from gateway.store.archive import READ_CHUNK, ArchiveStore
from gateway.store.keys import DUPLICATES_LOGGED
from tests.support.store import DeliveryStore
from tooling.embedded_redis import EmbeddedRedis


@pytest.fixture
async def store(redis: Redis, redis_server: EmbeddedRedis) -> AsyncIterator[Store]:
    # A connection pool of its own, so concurrent calls really run on several connections.
    client = Redis.from_url(redis_server.url, decode_responses=True, max_connections=50)
    yield Store(client, f"s{uuid.uuid4().hex[:6]}:", dedup_ttl=60, retention=3600, grace=300)
    await client.aclose()


def new_request(api_id: str, ref: str = "") -> NewRequest:
    return NewRequest(
        api_id=api_id,
        method="POST",
        resource="Call/",
        params={},
        metadata={"n": 1},
        targets=[{"type": "webhook", "url": "http://x/h"}],
        timeout_s=60,
        ref=ref or uuid.uuid4().hex,
    )


def entry(cb: str, api_id: str) -> str:
    return json.dumps({"cb": cb, "at": 1, "m": "POST", "q": "", "enc": "form", "p": {"api_id": api_id}})


async def test_ingest_deduplicates_concurrent_copies(store: Store) -> None:
    results = await asyncio.gather(*(store.ingest("cb1", entry("cb1", "a")) for _ in range(50)))
    assert results.count(True) == 1
    entries = await store.redis.xrange(store.inbox)
    # One stored; the first DUPLICATES_LOGGED duplicates are logged for history, marked, the rest
    # only counted: a flood of copies does not grow the inbox.
    assert [f.get("dup") for _, f in entries] == [None] + ["1"] * DUPLICATES_LOGGED
    seconds, _ = await store.redis.time()
    bucket, field = store.keys.dedup("cb1", int(seconds) // store.dedup_ttl)
    assert await store.redis.hget(bucket, field) == "50"  # the copies, counted in the mark
    assert 0 < await store.redis.ttl(bucket) <= 2 * store.dedup_ttl


async def test_a_dedup_mark_outlives_its_period_and_then_goes(redis_server: EmbeddedRedis) -> None:
    # Marks are fields of per-period hashes (lua/lib/seen.lua): one written just before a period
    # ends is still found in the next (the previous bucket is looked up too), and gone after that.
    client = Redis.from_url(redis_server.url, decode_responses=True)
    store = Store(client, f"s{uuid.uuid4().hex[:6]}:", dedup_ttl=1, retention=3600, grace=300)
    try:
        _, micros = await client.time()  # Redis' clock, not this process's, decides the period
        await asyncio.sleep(1 - micros / 1e6 + 0.05)  # just after a period starts
        assert await store.ingest("cb9", entry("cb9", "a")) == 1
        await asyncio.sleep(1.0)  # the next period
        assert await store.ingest("cb9", entry("cb9", "a")) == 0  # found in the previous bucket
        await asyncio.sleep(2.1)  # both periods over: the bucket has expired
        assert await store.ingest("cb9", entry("cb9", "a")) == 1
    finally:
        await client.aclose()


async def test_callback_before_submit_is_parked_then_moved_back(store: Store) -> None:
    api_id = str(uuid.uuid4())
    parked = await store.correlate(f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result")
    assert parked.outcome == "parked"
    assert await store.redis.zscore(store.key("unmatched"), f"api:{api_id}") is not None
    assert await store.save_request(new_request(api_id))
    # The parked callback is back in the inbox, the parking spot and its deadline are gone.
    assert await store.redis.xlen(store.inbox) == 1
    assert not await store.redis.exists(store.key("park", "api", api_id))
    assert await store.redis.zscore(store.key("unmatched"), f"api:{api_id}") is None
    matched = await store.correlate(f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result")
    assert matched.outcome == "matched"
    assert matched.metadata == {"n": 1}


async def test_replayed_correlation_is_recognised(store: Store) -> None:
    api_id = str(uuid.uuid4())
    await store.save_request(new_request(api_id))
    first = await store.correlate(f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result")
    again = await store.correlate(f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result")
    other = await store.correlate(f"api:{api_id}", "cb2", entry("cb2", api_id), kind="result")
    assert (first.outcome, again.outcome, other.outcome) == ("matched", "replay", "extra")
    status, result_cb = await store.request_fields(api_id, "status", "result_cb")
    assert status == "completed" and result_cb == "cb1"
    assert await store.redis.zscore(store.key("requests", "pending"), api_id) is None


async def test_links_route_status_callbacks_and_release_parked_ones(store: Store) -> None:
    api_id = str(uuid.uuid4())
    await store.save_request(new_request(api_id))
    # A status callback that beats the result which carries its message_uuid: parked.
    early = await store.correlate("msg:m1", "s1", "{}", kind="message", seq="1")
    assert early.outcome == "parked"
    before = await store.redis.xlen(store.inbox)
    done = await store.correlate(
        f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result", links=["msg:m1", "msg:m2"]
    )
    assert done.outcome == "matched"
    assert await store.redis.xlen(store.inbox) == before + 1  # the parked status is released
    assert (await store.correlate("msg:m2", "s2", "{}", kind="message", seq="2")).api_id == api_id
    assert (await store.correlate("msg:m2", "s3", "{}", kind="message", seq="1")).outcome == "stale"
    assert (await store.correlate("msg:m2", "s4", "{}", kind="message", seq="3")).outcome == "matched"


async def test_a_message_keeps_one_key_its_link_with_its_last_status(store: Store) -> None:
    """The last accepted status of a message lives in its link: one key a message, not two."""
    api_id = str(uuid.uuid4())
    await store.save_request(new_request(api_id))
    await store.correlate(f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result", links=["msg:m1"])
    assert (await store.correlate("msg:m1", "s2", "{}", kind="message", seq="2")).outcome == "matched"
    keys = [k async for k in store.redis.scan_iter(match=store.prefix + "*m1*")]
    assert keys == [store.prefix + "link:msg:m1"]
    assert await store.redis.hgetall(keys[0]) == {"a": api_id, "q": "2", "c": "s2"}  # type: ignore[misc]
    assert 0 < await store.redis.ttl(keys[0]) <= store.link_ttl


async def test_a_link_written_as_a_string_is_read_and_becomes_a_hash(store: Store) -> None:
    """Links and status state from a gateway before links were hashes: still followed, still
    ordering statuses, and folded into one key on first use."""
    api_id = str(uuid.uuid4())
    await store.save_request(new_request(api_id))
    await store.correlate(f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result", links=[])
    link, state = store.prefix + "link:msg:old", store.prefix + "state:msg:old"
    await store.redis.set(link, api_id, ex=500)
    await store.redis.hset(state, mapping={"seq": "5", "cb": "s5"})  # type: ignore[misc]
    stale = await store.correlate("msg:old", "s4", "{}", kind="message", seq="4")
    assert (stale.outcome, stale.api_id) == ("stale", api_id)
    assert await store.redis.hgetall(link) == {"a": api_id, "q": "5", "c": "s5"}  # type: ignore[misc]
    assert 490 < await store.redis.ttl(link) <= 500
    assert not await store.redis.exists(state)
    assert (await store.correlate("msg:old", "s6", "{}", kind="message", seq="6")).outcome == "matched"


async def test_the_archive_reads_and_releases_a_batch_larger_than_one_script_call(store: Store) -> None:
    """Trees go to Redis scripts READ_CHUNK at a time: every one of a longer batch is read and
    let go, none only by the first call."""
    count = 2 * READ_CHUNK + 7
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for api_id in ids:
        await store.save_request(new_request(api_id))
        await store.correlate(f"api:{api_id}", "cb-" + api_id, entry("cb-" + api_id, api_id), kind="result")
    archive = ArchiveStore(store.redis, store.prefix)
    members = await archive.due(0, 10 * count)
    assert len(members) == count
    changed = await archive.read(members)
    assert sorted(c.api_id for c in changed) == sorted(ids)
    assert all(c.tree.settled for c in changed)
    assert await archive.release(changed, 60, forget=True) == count
    assert await store.redis.zcard(store.prefix + "archive") == 0
    for api_id in ids:
        assert await store.redis.hget(store.key("req", api_id), "h") == "1"  # type: ignore[misc]


async def test_submit_and_callback_race_never_loses_or_doubles(store: Store) -> None:
    """Whichever runs first, exactly one of them leads to a completion.

    Without one script per side, correlate could see no request, submit could then see nothing
    parked, and correlate would park the callback after all: it would never be matched."""
    for _ in range(150):
        api_id = str(uuid.uuid4())
        before = await store.redis.xlen(store.inbox)
        corr, _ = await asyncio.gather(
            store.correlate(f"api:{api_id}", "cb", entry("cb", api_id), kind="result"),
            store.save_request(new_request(api_id)),
        )
        moved = await store.redis.xlen(store.inbox) - before
        if corr.outcome == "matched":
            assert moved == 0
        else:
            assert corr.outcome == "parked" and moved == 1
        assert not await store.redis.exists(store.key("park", "api", api_id))


@pytest.fixture
def dstore(store: Store) -> DeliveryStore:
    return DeliveryStore(store.redis, store.prefix, retention=3600)


async def test_emit_is_idempotent(store: Store, dstore: DeliveryStore) -> None:
    event = {"id": "evt_1", "api_id": "a1", "type": "request.completed"}
    deliveries = [("dlv_a", {"type": "webhook", "url": "http://x"}), ("dlv_b", {"type": "queue"})]
    created, states = await dstore.emit(event, deliveries)
    assert created and states == ["pending", "pending"]
    await dstore.record_attempt("dlv_a", status="succeeded", attempts=1, code=200, error="", next_at=None)
    created, states = await dstore.emit(event, deliveries)
    assert not created and states == ["succeeded", "pending"]
    assert await store.redis.lrange(store.key("reqevents", "a1"), 0, -1) == ["evt_1"]


async def test_recorded_success_is_never_overwritten(dstore: DeliveryStore) -> None:
    await dstore.emit({"id": "evt_2", "api_id": None}, [("dlv_c", {"type": "webhook", "url": "u"})])
    await dstore.record_attempt("dlv_c", status="succeeded", attempts=1, code=200, error="", next_at=None)
    late = await dstore.record_attempt(
        "dlv_c", status="failed", attempts=2, code=500, error="x", next_at=None
    )
    assert late == "succeeded"
    assert (await dstore.get_delivery("dlv_c"))["status"] == "succeeded"


async def consumers(store: Store) -> dict[str, int]:
    found = await store.redis.xinfo_consumers(store.inbox, INBOX_GROUP)
    return {str(c["name"]): int(c["pending"]) for c in found}


async def read_and_ack(store: Store, consumer: str) -> None:
    read = await store.redis.xreadgroup(INBOX_GROUP, consumer, {store.inbox: ">"}, count=1)
    await store.redis.xack(store.inbox, INBOX_GROUP, read[0][1][0][0])


async def test_a_consumer_is_forgotten_only_with_nothing_in_its_hands(store: Store) -> None:
    """DELCONSUMER drops the entries a consumer holds, and nobody would claim them again: the
    consumer goes only when it holds none (checked in the same script)."""
    await store.ensure_group()
    for n in range(4):
        assert await store.ingest(f"cb{n}", entry(f"cb{n}", "a"))
    await read_and_ack(store, "done")
    await store.redis.xreadgroup(INBOX_GROUP, "holding", {store.inbox: ">"}, count=1)
    assert await consumers(store) == {"done": 0, "holding": 1}

    assert not await store.forget_consumer("holding")
    assert await store.forget_consumer("done")
    assert await consumers(store) == {"holding": 1}
    assert len(await store.redis.xpending_range(store.inbox, INBOX_GROUP, "-", "+", 10)) == 1

    # Swept by idle time: a consumer that read recently stays, one holding an entry stays.
    await read_and_ack(store, "idle")
    await asyncio.sleep(1.0)
    await read_and_ack(store, "recent")
    assert await store.forget_idle_consumers(500) == 1
    assert await consumers(store) == {"holding": 1, "recent": 0}
    # Once its entry is claimed by a live worker, the dead one's consumer goes too.
    await store.redis.xautoclaim(store.inbox, INBOX_GROUP, "recent", min_idle_time=0, start_id="0-0")
    assert await store.forget_idle_consumers(500) == 1
    assert await consumers(store) == {"recent": 1}


async def test_a_finished_request_and_its_links_live_for_the_link_ttl(store: Store) -> None:
    short = Store(store.redis, store.prefix, dedup_ttl=60, retention=3600, grace=300, link_ttl=120)
    api_id = str(uuid.uuid4())
    assert await short.save_request(new_request(api_id))
    assert await short.redis.ttl(short.key("req", api_id)) > 120  # pending: its deadline + the link TTL
    matched = await short.correlate(
        f"api:{api_id}", "cb1", entry("cb1", api_id), kind="result", links=["msg:m-1"]
    )
    assert matched.outcome == "matched"
    assert 0 < await short.redis.ttl(short.key("req", api_id)) <= 120
    assert 0 < await short.redis.ttl(short.key("link", "msg:m-1")) <= 120
    status = await short.correlate("msg:m-1", "cb2", entry("cb2", api_id), kind="status", seq="1")
    assert status.api_id == api_id
    assert 0 < await short.redis.ttl(short.key("link", "msg:m-1")) <= 120  # renewed with its status
    assert await short.redis.hget(short.key("link", "msg:m-1"), "q") == "1"  # type: ignore[misc]
