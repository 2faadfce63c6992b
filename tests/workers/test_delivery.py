"""Delivery to subscriptions end to end: retries, 410, timeouts, 429, dead letters, retry, replay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from standardwebhooks import Webhook

from gateway.store import INBOX_GROUP
from gateway.store.delivery import DeliveryStore
from tests.conftest import Stack
from tests.support.receiver import wait_until
from tests.support.scripted import Reply, ScriptedEndpoint

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


@pytest.fixture
async def endpoint() -> AsyncIterator[ScriptedEndpoint]:
    ep = ScriptedEndpoint().start()
    yield ep
    ep.stop()


async def subscribe(stack: Stack, url: str, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "event_types": ["request.completed"], **extra}
    answer = await stack.client.post(stack.gateway.url + "/v1/subscriptions", json=body, headers=stack.auth)
    assert answer.status_code == 201, answer.text
    sub: dict[str, Any] = answer.json()["subscription"]
    return sub


async def trigger(stack: Stack, **extra: Any) -> str:
    response = await stack.submit({"resource": "Call/", "params": CALL, **extra})
    assert response.status_code == 202, response.text
    api_id: str = response.json()["api_id"]
    return api_id


async def deliveries(stack: Stack, **params: Any) -> dict[str, Any]:
    answer = await stack.client.get(stack.gateway.url + "/v1/deliveries", params=params, headers=stack.auth)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def one_delivery(stack: Stack, sub_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        objects = (await deliveries(stack, subscription_id=sub_id, status=status))["objects"]
        if objects:
            found.update(objects[0])
        return bool(objects)

    await wait_until(check, timeout=timeout)
    return found


async def test_fails_n_times_then_delivered_once_with_the_same_id(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    stack: Stack = await stack_factory()
    endpoint.script = [Reply(500), Reply(503), Reply(302, headers={"location": "/elsewhere"})]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0, 0.1, 0.1, 0.1, 0.1])
    await trigger(stack)
    delivery = await one_delivery(stack, sub["id"], "succeeded")
    await asyncio.sleep(0.4)
    hooks = endpoint.on("/hook")
    assert len(hooks) == 4  # N = 3 failures, then one success, nothing after it
    assert endpoint.on("/elsewhere") == []  # redirects are failures, never followed
    ids = {h.headers["webhook-id"] for h in hooks}
    assert len(ids) == 1
    for hook in hooks:
        event = Webhook(sub["secret"]).verify(hook.body, hook.headers)
        assert event["id"] == hook.headers["webhook-id"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 302, 200]
    assert delivery["attempt_count"] == 4 and delivery["event_id"] in ids
    assert all(a["duration_ms"] >= 0 for a in delivery["attempts"])


async def test_410_disables_the_subscription_and_tells_operators(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    stack: Stack = await stack_factory()
    endpoint.script = [Reply(410)]
    sub = await subscribe(stack, endpoint.url("/gone"), retry_schedule=[0, 0.1, 0.1])
    ops = await subscribe(stack, endpoint.url("/ops"), event_types=["subscription.disabled"])
    await trigger(stack)
    failed = await one_delivery(stack, sub["id"], "failed")
    assert [a["status_code"] for a in failed["attempts"]] == [410]
    url = f"{stack.gateway.url}/v1/subscriptions/{sub['id']}"
    record = (await stack.client.get(url, headers=stack.auth)).json()["subscription"]
    assert record["status"] == "disabled" and "410" in record["disabled_reason"]
    await wait_until(lambda: endpoint.on("/ops"))
    note = Webhook(ops["secret"]).verify(endpoint.on("/ops")[0].body, endpoint.on("/ops")[0].headers)
    assert note["type"] == "subscription.disabled"
    assert note["data"]["subscription_id"] == sub["id"]
    # A disabled subscription receives nothing more.
    await trigger(stack)
    await asyncio.sleep(0.8)
    assert len(endpoint.on("/gone")) == 1
    # Until an operator enables it again: new events reach it (the endpoint answers 200 now).
    enabled = await stack.client.post(url + "/enable", headers=stack.auth)
    assert enabled.status_code == 200 and enabled.json()["subscription"]["status"] == "active"
    assert enabled.json()["subscription"]["disabled_reason"] is None
    await trigger(stack)
    await wait_until(lambda: len(endpoint.on("/gone")) == 2)
    again = await stack.client.post(url + "/enable", headers=stack.auth)  # idempotent
    assert again.status_code == 200 and again.json()["message"] == "subscription was active already"


async def test_a_hanging_endpoint_times_out_and_is_retried_never_twice_at_once(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint, redis: Redis
) -> None:
    stack: Stack = await stack_factory(GATEWAY_DELIVERY_TIMEOUT=0.5, GATEWAY_OVERLOAD_FLOOR=0.3)
    endpoint.script = [Reply(200, delay=3.0)]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0, 0.1])
    await trigger(stack)
    await wait_until(lambda: endpoint.on("/hook"))
    pending = await one_delivery(stack, sub["id"], "pending")
    # A duplicate job for the same attempt while the first one hangs: the lease turns it away.
    dstore = DeliveryStore(redis, stack.settings.GATEWAY_KEY_PREFIX, retention=3600)
    assert await dstore.defer(pending["id"], 0, 1, 0)
    await wait_until(lambda: len(endpoint.on("/hook")) >= 2)
    delivered = await one_delivery(stack, sub["id"], "succeeded")
    first, second = endpoint.on("/hook")[:2]
    # The second attempt started only after the first one's deadline plus the overload floor.
    assert second.at - first.at >= 0.5 + 0.3 - 0.05
    assert [a["outcome"] for a in delivered["attempts"]] == ["timeout", "success"]
    await asyncio.sleep(0.5)
    assert len(endpoint.on("/hook")) == 2


async def test_a_retry_job_that_meets_redis_trouble_runs_again_instead_of_being_dropped(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint, redis: Redis
) -> None:
    """arq forgets a job that raised. Here the retry job's ``finish`` times out (Redis pauses
    writes for longer than the worker's 5 s read timeout, while arq's own connection, which has
    no read timeout, just waits): the job must be run again, not leave its delivery pending with
    nothing scheduled."""
    stack: Stack = await stack_factory(GATEWAY_DELIVERY_TIMEOUT=1.0)
    pause_s = 8.0  # the worker has 3 s to send its finish for the 5 s read timeout to expire first

    def pause_writes() -> None:
        with SyncRedis.from_url(stack.settings.REDIS_URL) as admin:
            admin.execute_command("CLIENT", "PAUSE", int(pause_s * 1000), "WRITE")

    endpoint.script = [Reply(500), Reply(200, before=pause_writes)]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0, 0.1])
    try:
        await trigger(stack)
        await wait_until(lambda: len(endpoint.on("/hook")) >= 2)
        # The retry job's finish went unanswered, the job was retried, found the attempt's lease
        # (until it expired: attempt timeout + 5 s), then made the attempt again.
        await wait_until(lambda: len(endpoint.on("/hook")) >= 3, timeout=30)
        delivered = await one_delivery(stack, sub["id"], "succeeded")
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
    first, second, third = endpoint.on("/hook")
    assert third.at - second.at >= 5.0  # not before the worker's read had timed out
    assert {h.headers["webhook-id"] for h in (first, second, third)} == {delivered["event_id"]}
    assert [a["status_code"] for a in delivered["attempts"]] == [500, 200]


async def test_a_stopped_worker_leaves_no_consumer_in_the_inbox_group(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint, redis: Redis
) -> None:
    stack: Stack = await stack_factory()
    sub = await subscribe(stack, endpoint.url())
    await trigger(stack)
    await one_delivery(stack, sub["id"], "succeeded")
    inbox = stack.settings.GATEWAY_KEY_PREFIX + "inbox"
    assert len(await redis.xinfo_consumers(inbox, INBOX_GROUP)) == 1  # the worker's, named per process
    assert stack.worker is not None
    await asyncio.to_thread(stack.worker.stop)
    assert await redis.xinfo_consumers(inbox, INBOX_GROUP) == []


async def test_a_delivery_that_waits_for_the_workers_connection_is_put_off_not_failed(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    """One connection, two subscriptions to an endpoint that answers in 3 s (deadline 4 s): the
    second delivery waits for the connection longer than SLOT_WAIT_S, so it is put off until its
    lease expired, uncounted, instead of being recorded as a timeout of its endpoint."""
    stack: Stack = await stack_factory(WORKER_CONCURRENCY=1, GATEWAY_DELIVERY_TIMEOUT=4.0)
    endpoint.script = [Reply(200, delay=3.0), Reply(200, delay=3.0)]
    subs = [await subscribe(stack, endpoint.url(f"/hook{n}")) for n in range(2)]
    await trigger(stack)
    for sub in subs:
        delivery = await one_delivery(stack, sub["id"], "succeeded", timeout=30)
        assert [a["outcome"] for a in delivery["attempts"]] == ["success"]
    arrivals = sorted(r.at for r in endpoint.received)
    assert len(arrivals) == 2
    # The second was sent only after its lease (4 s + 5 s) had expired, not while waiting.
    assert arrivals[1] - arrivals[0] >= 9.0 - 0.5


async def test_an_entry_whose_only_delivery_is_put_off_is_acknowledged_with_it(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint, redis: Redis
) -> None:
    """The inbox entry of a callback with one delivery is acknowledged by that attempt's record;
    when the attempt is put off instead (no free connection), the entry is acknowledged with the
    deferral, not left in the worker's hands until another claims and handles it again."""
    stack: Stack = await stack_factory(WORKER_CONCURRENCY=1, GATEWAY_DELIVERY_TIMEOUT=5.0)
    # The first event's attempt fails fast; its retry (an arq job) then holds the only connection.
    endpoint.script = [Reply(500), Reply(200, delay=4.5)]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0, 0])
    inbox = stack.settings.GATEWAY_KEY_PREFIX + "inbox"

    async def in_hands() -> int:
        summary = await redis.xpending(inbox, INBOX_GROUP)
        return int(summary["pending"])

    async def none_in_hands() -> bool:
        return await in_hands() == 0

    await trigger(stack)
    await wait_until(lambda: len(endpoint.on("/hook")) >= 2)
    await trigger(stack)  # its only delivery waits for the connection, then is put off
    await wait_until(in_hands, timeout=5)
    await wait_until(none_in_hands, timeout=5)  # acknowledged with the deferral, after ~2.5 s

    async def both_delivered() -> bool:
        return len((await deliveries(stack, subscription_id=sub["id"], status="succeeded"))["objects"]) == 2

    await wait_until(both_delivered, timeout=30)
    done = (await deliveries(stack, subscription_id=sub["id"], status="succeeded"))["objects"]
    outcomes = sorted([a["outcome"] for a in d["attempts"]] for d in done)
    assert outcomes == [["http_error", "success"], ["success"]]  # the deferral was not an attempt
    assert len(endpoint.on("/hook")) == 3


async def test_429_retry_after_is_honoured_within_bounds(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    stack: Stack = await stack_factory(GATEWAY_OVERLOAD_FLOOR=0.05)
    endpoint.script = [Reply(429, headers={"retry-after": "1"}), Reply(429, headers={"retry-after": "3600"})]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0, 0.5, 0.5])
    await trigger(stack)
    delivered = await one_delivery(stack, sub["id"], "succeeded")
    a, b, c = endpoint.on("/hook")
    assert 0.95 <= b.at - a.at < 1.6  # Retry-After 1 s (within [0.5, 1.0]): honoured
    assert 0.95 <= c.at - b.at < 1.6  # Retry-After 1 h: clamped to 2 x 0.5 s
    assert [x["status_code"] for x in delivered["attempts"]] == [429, 429, 200]


async def test_dead_letter_then_manual_retry_then_event_replay(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint, redis: Redis
) -> None:
    stack: Stack = await stack_factory()
    endpoint.script = [Reply(500), Reply(500)]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0, 0.1])
    queue = "replay-q"
    await trigger(stack, targets=[{"type": "queue", "queue": queue, "function": "on_result"}])
    dead = await one_delivery(stack, sub["id"], "failed")
    assert [a["status_code"] for a in dead["attempts"]] == [500, 500]
    assert dead["last_status_code"] == 500 and dead["next_attempt_at"] is None
    listed = await deliveries(stack, status="failed", event_type="request.completed", limit=1)
    assert listed["meta"]["total_count"] == 1 and listed["objects"][0]["id"] == dead["id"]

    base = stack.gateway.url + "/v1/deliveries"
    retried = await stack.client.post(f"{base}/{dead['id']}/retry", headers=stack.auth)
    assert retried.status_code == 202 and retried.json()["status"] == "pending"
    ok = await one_delivery(stack, sub["id"], "succeeded")
    assert [a["status_code"] for a in ok["attempts"]] == [500, 500, 200]
    assert len({h.headers["webhook-id"] for h in endpoint.on("/hook")}) == 1
    again = await stack.client.post(f"{base}/{dead['id']}/retry", headers=stack.auth)
    assert again.status_code == 202  # a succeeded delivery can be sent again on request
    await wait_until(lambda: len(endpoint.on("/hook")) == 4)
    assert (await stack.client.post(f"{base}/dlv_nope/retry", headers=stack.auth)).status_code == 404

    # The queue target was enqueued once; a replay of the event enqueues it again (new job id).
    jobs = await redis.zrange(queue, 0, -1)
    assert len(jobs) == 1
    replay = await stack.client.post(
        f"{stack.gateway.url}/v1/events/{dead['event_id']}/replay", headers=stack.auth
    )
    assert replay.status_code == 202 and len(replay.json()["deliveries"]) == 2
    await wait_until(lambda: len(endpoint.on("/hook")) == 5)
    await wait_until(lambda: redis.zcard(queue), timeout=5)
    await wait_until(lambda: _eq(redis.zcard(queue), 2))
    missing = await stack.client.post(f"{stack.gateway.url}/v1/events/evt_nope/replay", headers=stack.auth)
    assert missing.status_code == 404


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_bulk_replay_of_failed_deliveries_is_capped(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    stack: Stack = await stack_factory(GATEWAY_BULK_REPLAY_MAX=1)
    endpoint.script = [Reply(500), Reply(500)]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0])
    await trigger(stack)
    await trigger(stack)

    async def two_failed() -> bool:
        return (await deliveries(stack, subscription_id=sub["id"], status="failed"))["meta"][
            "total_count"
        ] == 2

    await wait_until(two_failed)
    url = f"{stack.gateway.url}/v1/subscriptions/{sub['id']}/replay"
    first = await stack.client.post(url, json={"created_at__gte": "2000-01-01T00:00:00Z"}, headers=stack.auth)
    assert first.status_code == 202 and first.json()["replayed"] == 1 and first.json()["remaining"] == 1
    second = await stack.client.post(url, headers=stack.auth)  # no body: the whole retention
    assert second.json()["replayed"] == 1 and second.json()["remaining"] == 0

    async def two_succeeded() -> bool:
        got = await deliveries(stack, subscription_id=sub["id"], status="succeeded")
        return bool(got["meta"]["total_count"] == 2)

    await wait_until(two_succeeded)
    empty = await stack.client.post(url, json={"created_at__lte": "2000-01-01T00:00:00Z"}, headers=stack.auth)
    assert empty.json()["replayed"] == 0
    bad = await stack.client.post(url, json={"created_at__lte": "yesterday"}, headers=stack.auth)
    assert bad.status_code == 400


async def test_secret_rotation_signs_with_both_secrets(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    stack: Stack = await stack_factory()
    sub = await subscribe(stack, endpoint.url())
    rotated = await stack.client.post(
        f"{stack.gateway.url}/v1/subscriptions/{sub['id']}/rotate-secret", headers=stack.auth
    )
    assert rotated.status_code == 200
    new = rotated.json()["subscription"]
    assert new["secret"] != sub["secret"] and new["previous_secret_expires_at"]
    await trigger(stack)
    await wait_until(lambda: endpoint.on("/hook"))
    hook = endpoint.on("/hook")[0]
    assert len(hook.headers["webhook-signature"].split(" ")) == 2
    for secret in (sub["secret"], new["secret"]):  # receivers on either secret accept it
        Webhook(secret).verify(hook.body, hook.headers)


async def test_bounded_response_read(stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint) -> None:
    stack: Stack = await stack_factory(GATEWAY_MAX_RESPONSE_BYTES=1000)
    endpoint.script = [Reply(500, body_bytes=20_000_000)]
    sub = await subscribe(stack, endpoint.url(), retry_schedule=[0])
    await trigger(stack)
    dead = await one_delivery(stack, sub["id"], "failed")
    attempt = dead["attempts"][0]
    assert len(attempt["response"]) == 1000
    assert attempt["duration_ms"] < 2000
