"""The compact request layout (gateway.store): records, deadline queues, ref buckets, merged listing.

Against a real Redis. The race tests fail if the scripts they exercise stop being atomic."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.store import NewRequest, Store
from gateway.store.core import HOUR_MS, pack_targets, ref_bucket, unpack_targets
from tooling.embedded_redis import EmbeddedRedis


@pytest.fixture
async def store(redis: Redis, redis_server: EmbeddedRedis) -> AsyncIterator[Store]:
    client = Redis.from_url(redis_server.url, decode_responses=True, max_connections=50)
    yield Store(client, f"m{uuid.uuid4().hex[:6]}:", dedup_ttl=60, retention=3600, grace=300)
    await client.aclose()


def new_request(
    api_id: str, *, ref: str = "", timeout_s: int = 60, metadata: dict[str, int] | None = None
) -> NewRequest:
    return NewRequest(
        api_id=api_id,
        method="POST",
        resource="Call/",
        params={},
        metadata={"n": 1} if metadata is None else metadata,
        targets=[{"type": "webhook", "url": "http://x/h", "method": "POST"}],
        timeout_s=timeout_s,
        ref=ref or uuid.uuid4().hex[:16],
    )


def entry(cb: str, api_id: str = "", ref: str = "") -> str:
    params = {"api_id": api_id} if api_id else {"cg_ref": ref}
    return json.dumps({"cb": cb, "at": 1, "m": "POST", "q": "", "enc": "form", "p": params})


async def timeout_entries(store: Store) -> list[str]:
    entries = await store.redis.xrange(store.inbox)
    return [json.loads(f["e"])["api_id"] for _, f in entries if json.loads(f["e"]).get("t") == "timeout"]


# --- the record ---------------------------------------------------------------------------------


async def test_pending_record_holds_only_what_differs_from_defaults(store: Store) -> None:
    api_id = str(uuid.uuid4())
    assert await store.save_request(new_request(api_id))
    raw = await store.redis.hgetall(store.key("req", api_id))
    assert set(raw) == {"r", "a", "d", "t"}
    assert raw["t"] == '["http://x/h"]'
    record, events = await store.get_request(api_id) or ({}, [])
    assert events == []
    assert record["api_id"] == api_id and record["status"] == "pending" and record["method"] == "POST"
    assert json.loads(record["targets"]) == [{"type": "webhook", "url": "http://x/h", "method": "POST"}]
    assert json.loads(record["metadata"]) == {"n": 1}
    # No per-request key besides the record, and none of the old layout's indexes; the request is
    # a member of the archive zset until the archiver has copied it to PostgreSQL.
    keys = {k async for k in store.redis.scan_iter(match=store.prefix + "*")}
    kinds = {k[len(store.prefix) :].split(":")[0] for k in keys}
    assert kinds == {"req", "requests", "due", "refs", "archive"}
    assert await store.redis.zrange(store.keys.archive, 0, -1) == ["r:" + api_id]
    assert store.key("requests") not in keys and store.key("deadlines") not in keys


async def test_request_fields_use_the_long_names(store: Store) -> None:
    api_id = str(uuid.uuid4())
    await store.save_request(new_request(api_id, metadata={}))
    status, metadata, targets, method, trace = await store.request_fields(
        api_id, "status", "metadata", "targets", "method", "traceparent"
    )
    assert (status, metadata, method, trace) == ("pending", "{}", "POST", None)
    assert json.loads(targets or "") == [{"type": "webhook", "url": "http://x/h", "method": "POST"}]
    assert await store.request_fields("nobody", "status", "metadata") == [None, None]


def test_targets_pack_to_urls_and_back() -> None:
    targets = [
        {"type": "webhook", "url": "https://a/h", "method": "POST"},
        {"type": "webhook", "url": "https://b/h"},
        {"type": "webhook", "url": "https://c/h", "method": "GET"},
        {"type": "queue", "queue": "billing", "function": "on_result"},
    ]
    packed = pack_targets(targets)
    assert json.loads(packed)[:2] == ["https://a/h", "https://b/h"]
    assert unpack_targets(packed) == [
        {"type": "webhook", "url": "https://a/h", "method": "POST"},
        {"type": "webhook", "url": "https://b/h", "method": "POST"},  # POST was the default
        targets[2],
        targets[3],
    ]


# --- refs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("api_id", [str(uuid.uuid4()), "not-a-uuid-at-all", str(uuid.uuid4()).upper()])
async def test_ref_only_result_correlates(store: Store, api_id: str) -> None:
    ref = uuid.uuid4().hex[:16]
    await store.save_request(new_request(api_id, ref=ref))
    corr = await store.correlate(f"ref:{ref}", "cb1", entry("cb1", ref=ref), kind="result")
    assert (corr.outcome, corr.api_id, corr.metadata) == ("matched", api_id, {"n": 1})
    assert (await store.request_fields(api_id, "status"))[0] == "completed"


async def test_ref_lookup_walks_back_through_the_live_hours_only(store: Store) -> None:
    api_id, ref = str(uuid.uuid4()), "r" * 16
    await store.save_request(new_request(api_id, ref=ref))
    [bucket] = [k async for k in store.redis.scan_iter(match=store.prefix + "refs:*")]
    assert 3590 < await store.redis.ttl(bucket) <= 3600  # retention after the last write
    hour = int(bucket.split(":")[-2])
    # Submitted an hour ago (retention is one hour here): still found.
    older = bucket.replace(f":{hour}:", f":{hour - 1}:")
    await store.redis.rename(bucket, older)
    found = await store.correlate(f"ref:{ref}", "cb1", entry("cb1", ref=ref), kind="result")
    assert found.outcome == "matched" and found.api_id == api_id
    # Older than retention plus an hour: that generation has expired by then, it is not looked at.
    await store.redis.rename(older, bucket.replace(f":{hour}:", f":{hour - 3}:"))
    lost = await store.correlate(f"ref:{ref}", "cb2", entry("cb2", ref=ref), kind="result")
    assert lost.outcome == "parked"


def test_ref_bucket_is_the_hour_and_three_hex_digits_of_sha1() -> None:
    assert ref_bucket("abc", 5 * HOUR_MS + 1) == "refs:5:a99"  # sha1("abc") = a9993e36...


async def test_ref_callback_and_submit_race_never_loses_or_doubles(store: Store) -> None:
    """The ``ref:`` twin of the ``api:`` race in test_store: the ref link is written by the submit
    script that also releases what was parked under the ref, so whichever runs first, exactly one
    correlation completes the request. Written apart, the callback could miss the link, park, and
    the submit could have checked the parking spot already: never matched."""
    for _ in range(150):
        api_id, ref = str(uuid.uuid4()), uuid.uuid4().hex[:16]
        before = await store.redis.xlen(store.inbox)
        corr, _ = await asyncio.gather(
            store.correlate(f"ref:{ref}", "cb", entry("cb", ref=ref), kind="result"),
            store.save_request(new_request(api_id, ref=ref)),
        )
        moved = await store.redis.xlen(store.inbox) - before
        if corr.outcome == "matched":
            assert moved == 0 and corr.api_id == api_id
        else:
            assert corr.outcome == "parked" and moved == 1
        assert not await store.redis.exists(store.key("park", "ref", ref))
        assert await store.redis.zscore(store.key("unmatched"), f"ref:{ref}") is None


# --- deadlines ----------------------------------------------------------------------------------


async def test_sweep_pops_what_is_due_and_nothing_else(store: Store) -> None:
    due = [str(uuid.uuid4()) for _ in range(5)]
    later = [str(uuid.uuid4()) for _ in range(5)]
    for api_id in due:
        await store.save_request(new_request(api_id, timeout_s=0))
    for api_id in later:
        await store.save_request(new_request(api_id, timeout_s=60))
    assert await store.expire_due(1000) == 5
    assert sorted(await timeout_entries(store)) == sorted(due)
    assert await store.redis.zcard(store.key("requests", "timed_out")) == 5
    assert await store.redis.zcard(store.key("requests", "pending")) == 5
    # The empty queue left the directory; the other one's score is its head's deadline.
    submitted = int((await store.request_fields(later[0], "submitted_at"))[0] or 0)
    assert await store.redis.zrange(store.key("due"), 0, -1, withscores=True) == [("60", submitted + 60_000)]
    assert await store.redis.llen(store.key("due", "60")) == 5
    assert await store.expire_due(1000) == 0


async def test_sweep_limit_and_finished_requests(store: Store) -> None:
    ids = [str(uuid.uuid4()) for _ in range(7)]
    for api_id in ids:
        await store.save_request(new_request(api_id, timeout_s=0))
    done = await store.correlate(f"api:{ids[0]}", "cb", entry("cb", ids[0]), kind="result")
    assert done.outcome == "matched"
    # A limit stops mid-queue; the next call goes on. The completed request is popped and skipped.
    assert await store.expire_due(3) == 3
    assert await store.expire_due(3) == 3
    assert await store.expire_due(3) == 1
    assert sorted(await timeout_entries(store)) == sorted(ids[1:])
    assert (await store.request_fields(ids[0], "status"))[0] == "completed"
    assert not await store.redis.exists(store.key("due"))


async def test_sweeps_and_results_racing_time_out_each_request_at_most_once(store: Store) -> None:
    """Several sweepers and the results of half the requests, all at once. The sweep script reads
    the status and writes the timeout in one step, and correlate completes in one step: so a
    request is timed out once or not at all, a result that lost the race is ``late``, and every
    request ends in exactly one status index. Split into separate commands, two sweepers could
    both see ``pending``, or a sweeper could time out a request a result had just completed."""
    ids = [str(uuid.uuid4()) for _ in range(200)]
    for api_id in ids:
        await store.save_request(new_request(api_id, timeout_s=0))

    async def sweeper() -> None:
        while await store.expire_due(7):
            await asyncio.sleep(0)

    async def result(n: int, api_id: str) -> str:
        for _ in range(n % 13):  # spread the results over the time the sweeps take
            await asyncio.sleep(0)
        corr = await store.correlate(f"api:{api_id}", "cb-" + api_id, entry("cb", api_id), kind="result")
        return corr.outcome

    outcomes = await asyncio.gather(
        *(result(n, a) for n, a in enumerate(ids[::2])), *(sweeper() for _ in range(4))
    )
    late = {a for a, o in zip(ids[::2], outcomes, strict=False) if o == "late"}
    assert set(outcomes[:100]) <= {"matched", "late"}
    timed_out = await timeout_entries(store)
    assert len(timed_out) == len(set(timed_out))  # none twice
    assert set(timed_out) == set(ids[1::2]) | late
    indexes = [
        set(await store.redis.zrange(store.key("requests", s), 0, -1))
        for s in ("pending", "completed", "timed_out")
    ]
    assert indexes[0] == set()
    assert indexes[1] == set(ids[::2]) and indexes[2] == set(ids[1::2])
    assert not await store.redis.exists(store.key("due"))
