"""/readyz (Redis + worker heartbeat) and /metrics (process counters + Redis gauges) on the real stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from gateway.store.delivery import BreakerPolicy
from tests.conftest import Stack
from tests.support.receiver import wait_until
from tests.support.store import DeliveryStore

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await stack.client.get(stack.gateway.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def value(s: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_readyz_follows_the_worker_heartbeat(stack_factory: Callable[..., Any]) -> None:
    stack: Stack = await stack_factory(worker=False, WORKER_HEARTBEAT_INTERVAL=0.1, WORKER_HEARTBEAT_TTL=1)
    url = stack.gateway.url + "/readyz"
    down = await stack.client.get(url)
    assert down.status_code == 503
    assert down.json()["redis"] == "up" and down.json()["worker"] == "down"
    worker = stack.start_worker()

    async def ready() -> bool:
        return (await stack.client.get(url)).status_code == 200

    await wait_until(ready, timeout=10)
    worker.stop()  # a clean stop removes its heartbeat at once
    assert (await stack.client.get(url)).status_code == 503


async def test_readyz_can_ignore_the_worker(stack_factory: Callable[..., Any]) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_READY_REQUIRES_WORKER=False)
    response = await stack.client.get(stack.gateway.url + "/readyz")
    assert response.status_code == 200
    assert response.json()["worker"] == "down"


async def test_readyz_is_503_when_redis_is_gone(stack_factory: Callable[..., Any]) -> None:
    stack: Stack = await stack_factory(worker=False, REDIS_URL="redis://127.0.0.1:1/0")
    response = await stack.client.get(stack.gateway.url + "/readyz")
    assert response.status_code == 503 and response.json()["redis"] == "down"
    # /metrics still answers (process counters) without the Redis gauges.
    metrics = await stack.client.get(stack.gateway.url + "/metrics")
    assert metrics.status_code == 200 and "callback_gateway_pending_requests" not in metrics.text


async def test_metrics_follow_a_callback_from_receipt_to_delivery(stack: Stack) -> None:
    before = await scrape(stack)
    await stack.configure_sandbox(delay=30)  # the first request stays pending
    pending = await stack.submit({"resource": "Call/", "params": CALL})
    assert pending.status_code == 202
    await stack.configure_sandbox(delay=0)
    done = await stack.submit(
        {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    )
    assert done.status_code == 202
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 1, timeout=15)
    bad = await stack.client.post(stack.gateway.url + "/callbacks/plivo", data={"CallUUID": "x"})
    assert bad.status_code == 403
    wrong_type = await stack.client.post(
        stack.gateway.url + "/callbacks/plivo", content=b"x", headers={"content-type": "text/plain"}
    )
    assert wrong_type.status_code == 415

    async def delivered() -> bool:
        now = await scrape(stack)
        name = "callback_gateway_delivery_latency_seconds_count"
        return value(now, name) > value(before, name)

    await wait_until(delivered, timeout=10)
    after = await scrape(stack)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("callback_gateway_callbacks_total", outcome="stored") >= 1
    assert delta("callback_gateway_callbacks_total", outcome="matched") >= 1
    assert delta("callback_gateway_callbacks_total", outcome="bad_signature") == 1
    assert delta("callback_gateway_callbacks_total", outcome="rejected_input") == 1
    assert delta("callback_gateway_submits_total", upstream_status="200") == 2
    assert delta("callback_gateway_delivery_attempts_total", outcome="success") >= 1
    assert value(after, "callback_gateway_pending_requests") == 1
    assert value(after, "callback_gateway_oldest_pending_age_seconds") > 0
    assert value(after, "callback_gateway_workers_alive") == 1
    assert value(after, "callback_gateway_dead_letters") == 0
    assert value(after, "callback_gateway_inbox_backlog") == 0
    assert value(after, "callback_gateway_queue_depth") >= 0
    assert ("callback_gateway_circuit_breakers", (("state", "closed"),)) in after


async def test_breaker_states_are_counted(stack: Stack, redis: Redis) -> None:
    created = await stack.client.post(
        stack.gateway.url + "/v1/subscriptions",
        json={"url": stack.hook_url("/sub"), "event_types": ["*"]},
        headers=stack.auth,
    )
    assert created.status_code == 201
    sub_id = created.json()["subscription"]["id"]
    # Opened as the worker opens it (the settle script), which also keeps the breaker index.
    dstore = DeliveryStore(redis, stack.settings.GATEWAY_KEY_PREFIX, retention=3600)
    policy = BreakerPolicy(
        window_ms=60_000, min_requests=1, failure_rate=0.5, cooldown_ms=60_000, disable_after_ms=3_600_000
    )
    admission, token = await dstore.admit(
        sub_id, rate=100.0, burst=10, cap=10, slot_ttl_ms=15_000, concurrency_wait_ms=250
    )
    assert admission.allowed
    assert await dstore.settle(sub_id, token, ok=False, gone=False, policy=policy) == "open"
    s = await scrape(stack)
    assert value(s, "callback_gateway_circuit_breakers", state="open") == 1
    assert value(s, "callback_gateway_circuit_breakers", state="closed") == 0
