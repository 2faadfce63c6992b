"""Reads that span Redis and PostgreSQL: a request's status, attempts and timeline answer the same
from either store."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.history.test_archive import archived, db, submit_message
from tests.support.receiver import wait_until

pytestmark = pytest.mark.history_writer_process


async def get(stack: Stack, path: str) -> Any:
    response = await stack.client.get(stack.gateway.url + path, headers=stack.auth)
    assert response.status_code == 200, response.text
    return response.json()


async def drop_from_redis(stack: Stack, redis: Redis, api_id: str) -> None:
    """As if Redis had let the request go: its record, its events' and deliveries' keys."""
    prefix = stack.settings.GATEWAY_KEY_PREFIX
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    doomed = [
        k for k in keys if k.split(":")[1] in ("req", "reqevents", "evt", "evtdlv", "dlv", "dlvlog", "cbs")
    ]
    assert any(k.endswith(api_id) for k in doomed)
    await redis.delete(*doomed)


async def test_status_lists_every_attempt_and_answers_the_same_from_postgresql(
    stack: Stack, redis: Redis
) -> None:
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: archived(stack, redis))
    hot = await get(stack, f"/v1/requests/{api_id}")
    assert hot["status"] == "completed" and len(hot["events"]) == 4
    attempts = hot["attempts"]
    assert len(attempts) == 4
    assert {a["status_code"] for a in attempts} == {200}
    assert {a["target"] for a in attempts} == {stack.hook_url()}
    assert {a["event_id"] for a in attempts} == {e["id"] for e in hot["events"]}
    assert all(a["attempt"] == 1 and a["duration_ms"] >= 0 and a["error"] is None for a in attempts)
    hot_timeline = await get(stack, f"/v1/requests/{api_id}/timeline")

    await drop_from_redis(stack, redis, api_id)
    cold = await get(stack, f"/v1/requests/{api_id}")
    for answer in (hot, cold):
        answer.pop("api_id")  # not this answer's own id: the request's, the same in both
    assert cold == hot
    assert await get(stack, f"/v1/requests/{api_id}/timeline") == hot_timeline


async def test_the_timeline_tells_the_story_in_order(stack: Stack, redis: Redis) -> None:
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    body = await get(stack, f"/v1/requests/{api_id}/timeline")
    assert body["api_id"] == api_id
    timeline = body["timeline"]
    kinds = [t["kind"] for t in timeline]
    assert kinds[:2] == ["submitted", "upstream_reply"]
    assert kinds.count("callback") == 4 and kinds.count("event") == 4 and kinds.count("attempt") == 4
    ats = [t["at"] for t in timeline]
    assert ats == sorted(ats)
    result = next(t for t in timeline if t["kind"] == "callback" and t["role"] == "result")
    assert (
        result["signature_version"] in ("v3", "v2") and result["early"] is False and result["late"] is False
    )
    statuses = [t["status"] for t in timeline if t["kind"] == "callback" and t["role"] == "status"]
    assert statuses == ["queued", "sent", "delivered"]
    # every event comes after the callback it was made of, every attempt after its event
    for event in (t for t in timeline if t["kind"] == "event"):
        first_attempt = next(
            t for t in timeline if t["kind"] == "attempt" and t["event_id"] == event["event_id"]
        )
        assert timeline.index(first_attempt) > timeline.index(event)


async def test_an_unknown_request_is_404_on_both_reads(stack: Stack) -> None:
    for path in ("/v1/requests/nope", "/v1/requests/nope/timeline"):
        response = await stack.client.get(stack.gateway.url + path, headers=stack.auth)
        assert response.status_code == 404 and "nope" in response.json()["error"]
    # What PostgreSQL cannot hold (NUL in text, times before year 1) is simply not there.
    for path in ("/v1/requests/a%00b", "/v1/requests/a%00b/timeline", "/v1/deliveries/d%00"):
        response = await stack.client.get(stack.gateway.url + path, headers=stack.auth)
        assert response.status_code == 404, (path, response.text)
    for query in (
        "event_type=a%00",
        "subscription_id=%00",
        "created_at__gte=-253402300799",
        f"offset={2**63}",
    ):
        response = await stack.client.get(f"{stack.gateway.url}/v1/deliveries?{query}", headers=stack.auth)
        assert response.status_code == 200 and response.json()["meta"]["total_count"] == 0, (
            query,
            response.text,
        )


async def test_erasing_a_finished_request_keeps_the_facts_in_both_stores(stack: Stack, redis: Redis) -> None:
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    before = await get(stack, f"/v1/requests/{api_id}")
    erased = await stack.client.delete(f"{stack.gateway.url}/v1/requests/{api_id}", headers=stack.auth)
    assert erased.status_code == 204, erased.text
    await wait_until(lambda: archived(stack, redis))
    for read in ("hot", "cold"):
        if read == "cold":
            await drop_from_redis(stack, redis, api_id)
        after = await get(stack, f"/v1/requests/{api_id}")
        assert after["erased_at"] and after["metadata"] == {} and after["result"] is None, read
        assert after["status"] == before["status"] and after["submitted_at"] == before["submitted_at"], read
        assert all(a["status_code"] == 200 for a in after["attempts"]), read
    conn = await db(stack)
    try:
        rows = await conn.fetch("SELECT body::text AS b, erased_at FROM events WHERE api_id = $1", api_id)
        assert len(rows) == 4 and all(r["erased_at"] is not None for r in rows)
        assert not any("order_id" in r["b"] or "MessageUUID" in r["b"] for r in rows)
        request = await conn.fetchrow(
            "SELECT record::text AS r, metadata::text AS m FROM requests WHERE api_id = $1", api_id
        )
        assert "order_id" not in request["r"] + request["m"] and "message_uuid" not in request["r"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM attempts WHERE api_id = $1 AND response IS NOT NULL", api_id
            )
            == 0
        )
    finally:
        await conn.close()


async def test_a_pending_request_cannot_be_erased(stack: Stack) -> None:
    await stack.configure_sandbox(delay=60)
    api_id = await submit_message(stack)
    refused = await stack.client.delete(f"{stack.gateway.url}/v1/requests/{api_id}", headers=stack.auth)
    assert refused.status_code == 400 and "pending" in refused.json()["error"]
    assert (await get(stack, f"/v1/requests/{api_id}"))["metadata"] == {"order_id": 7}
    missing = await stack.client.delete(f"{stack.gateway.url}/v1/requests/nope", headers=stack.auth)
    assert missing.status_code == 404


async def test_after_redis_let_go_lists_filter_and_replays_keep_the_webhook_id(
    stack_factory: Any, redis: Redis
) -> None:
    stack: Stack = await stack_factory(GATEWAY_HOT_RETENTION=1)
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: archived(stack, redis))
    prefix = stack.settings.GATEWAY_KEY_PREFIX

    async def let_go() -> bool:
        return not [k async for k in redis.scan_iter(match=prefix + "evt:*")]

    await wait_until(let_go, timeout=5)
    listed = await get(stack, "/v1/requests?status=completed")
    assert api_id in [r["api_id"] for r in listed["objects"]]
    assert listed["meta"]["total_count"] == 1 and "total_count_estimated" not in listed["meta"]
    statuses = await get(stack, "/v1/deliveries?event_type=message.status")
    assert statuses["meta"]["total_count"] == 3 and len(statuses["objects"]) == 3
    assert all(d["status"] == "succeeded" and len(d["attempts"]) == 1 for d in statuses["objects"])
    page = await get(stack, "/v1/deliveries?limit=2&offset=2")
    assert page["meta"]["total_count"] == 4 and len(page["objects"]) == 2 and page["meta"]["next"] is None
    one = statuses["objects"][0]
    assert (await get(stack, f"/v1/deliveries/{one['id']}"))["delivery"] == one

    first_ids = [h.headers["webhook-id"] for h in stack.receiver.on("/hook")]
    retried = await stack.client.post(
        f"{stack.gateway.url}/v1/deliveries/{one['id']}/retry", headers=stack.auth
    )
    assert retried.status_code == 202, retried.text
    replayed = await stack.client.post(
        f"{stack.gateway.url}/v1/events/{one['event_id']}/replay", headers=stack.auth
    )
    assert replayed.status_code in (202,), replayed.text
    await wait_until(lambda: len(stack.receiver.on("/hook")) >= 5)
    again = [h.headers["webhook-id"] for h in stack.receiver.on("/hook")[4:]]
    assert again and set(again) == {one["event_id"]} and one["event_id"] in first_ids
    await wait_until(lambda: archived(stack, redis))
    after = await get(stack, f"/v1/deliveries/{one['id']}")
    assert after["delivery"]["replays"] >= 1 and len(after["delivery"]["attempts"]) >= 2
