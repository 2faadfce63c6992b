"""Correlation over time: unmatched callbacks, status callbacks, timeouts, late results."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from tests.api.test_receiver import send, signed
from tests.conftest import Stack
from tests.support.receiver import wait_until

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


def events_of(stack: Stack, path: str = "/hook") -> list[dict[str, Any]]:
    import json

    return [json.loads(r.body) for r in stack.receiver.on(path)]


async def test_unmatched_callback_becomes_an_event_after_grace(stack_factory: Any) -> None:
    stack = await stack_factory(GATEWAY_UNMATCHED_GRACE=1, WORKER_SWEEP_INTERVAL=0.1)
    payload = {"api_id": "nobody-asked-for-this", "message": "call fired"}
    assert (await send(stack, signed(stack, payload))).status_code == 200
    orphan = {"Hello": "world"}  # nothing to correlate on at all
    assert (await send(stack, signed(stack, orphan))).status_code == 200
    url = stack.gateway.url + "/v1/callbacks/unmatched"

    async def listed() -> int:
        body = (await stack.client.get(url, headers=stack.auth)).json()
        return int(body["meta"]["total_count"])

    await asyncio.sleep(0.3)
    assert await listed() == 0  # still within the grace period
    await wait_until(lambda: _eq(listed(), 2), timeout=10)
    body = (await stack.client.get(url, headers=stack.auth)).json()
    assert {e["type"] for e in body["objects"]} == {"callback.unmatched"}
    assert {e["api_id"] for e in body["objects"]} == {None}
    assert payload in [e["data"] for e in body["objects"]]
    assert body["meta"]["next"] is None


async def _eq(coro: Any, value: int) -> bool:
    return bool(await coro == value)


async def test_message_status_callbacks_are_linked_to_the_request(stack: Stack) -> None:
    response = await stack.submit(
        {
            "resource": "Message/",
            "params": {"src": "14155550100", "dst": "14155550123", "text": "hi"},
            "targets": [{"type": "webhook", "url": stack.hook_url()}],
            "metadata": {"order_id": 7},
            "status_events": True,
        }
    )
    api_id = response.json()["api_id"]
    sent = stack.sandbox_state.requests[-1]["params"]
    assert sent["url"] == stack.settings.callback_url and sent["method"] == "POST"
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    events = events_of(stack)
    assert events[0]["type"] == "request.completed"
    statuses = [e for e in events if e["type"] == "message.status"]
    message_uuid = events[0]["data"]["message_uuid"]
    assert len(statuses) == 3
    for event in statuses:
        assert event["api_id"] == api_id
        assert event["metadata"] == {"order_id": 7}
        assert event["data"]["MessageUUID"] == message_uuid
    assert sorted(e["data"]["Status"] for e in statuses) == ["delivered", "queued", "sent"]
    assert len((await stack.status(api_id))["events"]) == 4


async def test_out_of_order_status_is_recorded_but_not_fanned_out(stack: Stack) -> None:
    response = await stack.submit(
        {
            "resource": "Message/",
            "params": {"src": "1", "dst": "2", "text": "hi"},
            "targets": [{"type": "webhook", "url": stack.hook_url()}],
        }
    )
    api_id = response.json()["api_id"]
    await wait_until(lambda: stack.receiver.on("/hook"))
    message_uuid = events_of(stack)[0]["data"]["message_uuid"]
    base = {"MessageUUID": message_uuid, "To": "2", "From": "1", "Type": "sms"}
    delivered = {**base, "Status": "delivered", "Sequence": "3"}
    sent = {**base, "Status": "sent", "Sequence": "2"}
    assert (await send(stack, signed(stack, delivered, header="X-Plivo-Signature-V2"))).status_code == 200
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 2)
    assert (await send(stack, signed(stack, sent, header="X-Plivo-Signature-V2"))).status_code == 200
    await wait_until(lambda: _eq(_event_count(stack, api_id), 3))
    await asyncio.sleep(0.3)
    assert [e["data"].get("Status") for e in events_of(stack)] == [None, "delivered"]


async def _event_count(stack: Stack, api_id: str) -> int:
    return len((await stack.status(api_id))["events"])


async def test_timeout_with_two_workers_emits_once_and_late_result_still_counts(
    stack_factory: Any, redis: Redis
) -> None:
    stack = await stack_factory(WORKER_SWEEP_INTERVAL=0.05)
    stack.start_worker()  # a second worker sweeping the same Redis
    await stack.configure_sandbox(delay=2.5)
    response = await stack.submit(
        {
            "resource": "Call/",
            "params": CALL,
            "targets": [{"type": "webhook", "url": stack.hook_url()}],
            "metadata": {"k": 1},
            "timeout": 1,
        }
    )
    api_id = response.json()["api_id"]
    await wait_until(lambda: stack.receiver.on("/hook"), timeout=10)
    first = events_of(stack)[0]
    assert first["type"] == "request.timed_out"
    assert first["api_id"] == api_id and first["metadata"] == {"k": 1}
    assert (await stack.status(api_id))["status"] == "timed_out"
    # The callback arrives after the deadline: recorded and emitted as request.completed.
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 2, timeout=10)
    await asyncio.sleep(0.3)
    assert [e["type"] for e in events_of(stack)] == ["request.timed_out", "request.completed"]
    status = await stack.status(api_id)
    assert status["status"] == "completed"
    listed = await stack.client.get(
        stack.gateway.url + "/v1/requests", params={"status": "completed"}, headers=stack.auth
    )
    assert [o["api_id"] for o in listed.json()["objects"]] == [api_id]


async def test_listing_is_paginated_newest_first(stack: Stack) -> None:
    await stack.configure_sandbox(delay=30)
    ids = []
    for _ in range(3):
        ids.append((await stack.submit({"resource": "Call/", "params": CALL})).json()["api_id"])
    url = stack.gateway.url + "/v1/requests"
    page1 = (await stack.client.get(url, params={"limit": 2}, headers=stack.auth)).json()
    assert [o["api_id"] for o in page1["objects"]] == ids[::-1][:2]
    assert page1["meta"]["total_count"] == 3
    assert page1["meta"]["next"] == "/v1/requests?limit=2&offset=2"
    assert page1["meta"]["previous"] is None
    page2 = (await stack.client.get(url, params={"limit": 2, "offset": 2}, headers=stack.auth)).json()
    assert [o["api_id"] for o in page2["objects"]] == [ids[0]]
    assert page2["meta"]["previous"] == "/v1/requests?limit=2&offset=0"
    pending = (await stack.client.get(url, params={"status": "pending"}, headers=stack.auth)).json()
    assert pending["meta"]["total_count"] == 3
    for bad in ({"limit": 0}, {"limit": 21}, {"offset": -1}, {"status": "weird"}):
        response = await stack.client.get(url, params=bad, headers=stack.auth)
        assert response.status_code == 400, bad
        assert set(response.json()) == {"api_id", "error"}
