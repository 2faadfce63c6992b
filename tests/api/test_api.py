"""The submit and status API: validation at the edge, upstream errors, nothing half-stored."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.support.receiver import wait_until

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


async def keys_of(redis: Redis, stack: Stack) -> list[str]:
    """Every key holding request or callback state (not what the worker creates at start)."""
    prefix = stack.settings.GATEWAY_KEY_PREFIX
    names = (
        "webhook_secret",
        "inbox",
        "queue:health-check",
        "rate:upstream",
        "workers",
        "archive_backfilled",
    )
    infra = {prefix + name for name in names}
    counters = prefix + "apirate:"  # the per-key API rate limit counts every request
    return [
        k async for k in redis.scan_iter(match=prefix + "*") if k not in infra and not k.startswith(counters)
    ]


async def ready(stack: Stack) -> bool:
    return (await stack.client.get(stack.gateway.url + "/readyz")).status_code == 200


def assert_error(response: Any, status: int, contains: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"api_id", "error"}, body
    assert contains in body["error"], body


async def test_auth_is_required(stack: Stack) -> None:
    url = stack.gateway.url + "/v1/requests"
    assert_error(await stack.client.post(url, json={}), 401, "bearer")
    wrong = await stack.client.post(url, json={}, headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401, "unknown API key")
    assert_error(await stack.client.get(url + "/abc"), 401, "bearer")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "resource"),
        ({"resource": "../../etc"}, "resource"),
        ({"resource": "Call/", "method": "PATCH"}, "method"),
        ({"resource": "Call/", "params": []}, "params"),
        ({"resource": "Call/", "params": {"callback_url": "x"}}, "params"),
        ({"resource": "Call/", "targets": [{"type": "webhook", "url": "ftp://x"}]}, "targets.0"),
        ({"resource": "Call/", "targets": [{"type": "queue", "queue": "q"}]}, "targets.0"),
        ({"resource": "Call/", "targets": [{"type": "carrier-pigeon"}]}, "targets.0"),
        ({"resource": "Call/", "metadata": "x"}, "metadata"),
        ({"resource": "Call/", "timeout": 0}, "timeout"),
        ({"resource": "Call/", "timeout": 10**9}, "timeout"),
        ({"resource": "Call/", "surprise": 1}, "surprise"),
    ],
)
async def test_invalid_bodies_name_the_field(
    stack: Stack, redis: Redis, body: dict[str, Any], field: str
) -> None:
    response = await stack.submit(body)
    assert_error(response, 400, field)
    assert stack.sandbox_state.requests == []
    assert await keys_of(redis, stack) == []


async def test_content_type_and_malformed_json(stack: Stack) -> None:
    url = stack.gateway.url + "/v1/requests"
    form = await stack.client.post(url, data={"resource": "Call/"}, headers=stack.auth)
    assert_error(form, 415, "application/json")
    broken = await stack.client.post(
        url, content=b"{nope", headers={**stack.auth, "content-type": "application/json"}
    )
    assert_error(broken, 400, "JSON")
    array = await stack.client.post(url, json=[1], headers=stack.auth)
    assert_error(array, 400, "object")


async def test_upstream_4xx_passes_through_and_stores_nothing(stack: Stack, redis: Redis) -> None:
    response = await stack.submit({"resource": "Call/", "params": {"from": "1", "to": "2"}})
    assert_error(response, 400, "answer_url parameter is missing")
    assert len(stack.sandbox_state.requests) == 1  # never retried
    assert await keys_of(redis, stack) == []


async def test_upstream_5xx_is_not_retried_for_a_create_but_is_for_a_read(stack: Stack) -> None:
    await stack.configure_sandbox(replies=[{"status": 503}])
    response = await stack.submit({"resource": "Call/", "params": CALL})
    # Plivo may have acted before the 503: the create is not resent (tests/services/test_upstream_safety.py).
    assert response.status_code == 502
    assert response.json()["status"] == "unknown"
    assert len(stack.sandbox_state.requests) == 1
    await stack.configure_sandbox(replies=[{"status": 503}, {"status": 502}])
    ok = await stack.submit({"method": "GET", "resource": "Call/", "params": CALL})
    assert ok.status_code == 202
    assert len(stack.sandbox_state.requests) == 4


async def test_upstream_429_after_bounded_retries(stack: Stack, redis: Redis) -> None:
    await stack.configure_sandbox(replies=[{"status": 429, "retry_after": 0}] * 4)
    response = await stack.submit({"resource": "Call/", "params": CALL})
    assert_error(response, 429, "rate limit")
    assert "retry-after" in response.headers
    assert len(stack.sandbox_state.requests) == 4
    assert await keys_of(redis, stack) == []


async def test_unreachable_upstream_is_502(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, PLIVO_API_URL="http://127.0.0.1:9")
    response = await stack.submit({"resource": "Call/", "params": CALL})
    assert_error(response, 502, "unreachable")


async def test_private_webhook_targets_are_refused_by_default(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, GATEWAY_ALLOW_PRIVATE_WEBHOOKS=False)
    for url in (
        "http://127.0.0.1:8080/h",
        "http://[::1]/h",
        "http://169.254.169.254/latest",
        "http://10.1.2.3/",
        "http://[::ffff:192.168.0.1]/",
    ):
        response = await stack.submit(
            {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": url}]}
        )
        assert_error(response, 400, "non-public")
    assert stack.sandbox_state.requests == []


async def test_status_of_unknown_request_is_404(stack: Stack) -> None:
    response = await stack.client.get(stack.gateway.url + "/v1/requests/nope", headers=stack.auth)
    assert_error(response, 404, "nope")


async def test_pending_status_before_callback(stack: Stack) -> None:
    await stack.configure_sandbox(delay=30)
    response = await stack.submit({"resource": "Call/", "params": CALL, "metadata": {"k": "v"}})
    status = await stack.status(response.json()["api_id"])
    assert status["status"] == "pending"
    assert status["result"] is None and status["events"] == [] and status["completed_at"] is None
    assert status["metadata"] == {"k": "v"} and status["resource"] == "Call/"


async def test_health_and_unknown_routes(stack: Stack) -> None:
    assert (await stack.client.get(stack.gateway.url + "/healthz")).json() == {"status": "ok"}
    # Ready once the worker (started with the stack) wrote its first heartbeat.
    await wait_until(lambda: ready(stack), timeout=10)
    assert_error(await stack.client.get(stack.gateway.url + "/nowhere"), 404, "Not Found")
    wrong = await stack.client.put(stack.gateway.url + "/v1/requests", headers=stack.auth)
    assert_error(wrong, 405, "Method Not Allowed")
