"""A create is never sent to Plivo twice: retried only when Plivo provably did not act on it, and
an unknown outcome is kept (status ``unknown``), answered 502 with its ref, and completed by its
callback if one comes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.domain.errors import BadGateway, OutcomeUnknown, RateLimited
from gateway.services.upstream import PlivoClient, RetryBudget
from tests.conftest import Stack
from tests.support.receiver import wait_until

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[PlivoClient, list[str]]:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    budget = RetryBudget(attempts=4, total_seconds=5, base_delay=0.001, max_delay=0.002)
    return PlivoClient(http, api_url="http://plivo", auth_id="MA1", auth_token="t", budget=budget), seen


def _raise(exc: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    return handler


def _status(code: int) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(code, json={"api_id": "x", "error": "nope"})


@pytest.mark.parametrize(
    "handler",
    [
        _status(500),
        _status(502),
        _status(503),
        _status(504),
        _raise(httpx.ReadTimeout),
        _raise(httpx.WriteTimeout),
        _raise(httpx.ReadError),
        _raise(httpx.RemoteProtocolError),
        lambda _: httpx.Response(200, text="not json"),
    ],
    ids=["500", "502", "503", "504", "read-timeout", "write-timeout", "reset", "protocol", "bad-2xx"],
)
async def test_a_post_whose_outcome_is_unknown_is_sent_once(handler: Any) -> None:
    client, seen = _client(handler)
    with pytest.raises(OutcomeUnknown):
        await client.request("POST", "Call/", {})
    assert seen == ["POST"]


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (_raise(httpx.ConnectError), BadGateway),
        (_raise(httpx.ConnectTimeout), BadGateway),
        (_raise(httpx.PoolTimeout), BadGateway),
        (_status(429), RateLimited),
    ],
    ids=["refused", "connect-timeout", "pool-timeout", "429"],
)
async def test_a_post_plivo_provably_did_not_act_on_is_retried(handler: Any, error: type[Exception]) -> None:
    client, seen = _client(handler)
    with pytest.raises(error) as raised:
        await client.request("POST", "Call/", {})
    assert not isinstance(raised.value, OutcomeUnknown)
    assert seen == ["POST"] * 4


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    "handler", [_status(502), _status(503), _status(504), _raise(httpx.ReadTimeout), _raise(httpx.ReadError)]
)
async def test_reads_and_deletes_retry_freely(method: str, handler: Any) -> None:
    client, seen = _client(handler)
    with pytest.raises(BadGateway) as raised:
        await client.request(method, "Call/x/", {})
    assert not isinstance(raised.value, OutcomeUnknown)
    assert seen == [method] * 4


async def _unknown_submit(stack: Stack, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    return await stack.client.post(
        stack.gateway.url + "/v1/requests", json=body, headers={**stack.auth, **(headers or {})}
    )


def _assert_unknown(response: httpx.Response) -> str:
    assert response.status_code == 502, response.text
    body = response.json()
    assert set(body) == {"api_id", "error", "status", "ref"}
    assert body["status"] == "unknown"
    assert "unknown" in body["error"] and "not resent" in body["error"]
    return str(body["ref"])


async def test_a_502_after_plivo_acted_is_stored_unknown_then_completed_by_its_callback(
    stack: Stack,
) -> None:
    await stack.configure_sandbox(replies=[{"status": 502, "executed": True}], delay=0.5)
    response = await _unknown_submit(stack)
    ref = _assert_unknown(response)
    assert len(stack.sandbox_state.requests) == 1
    found = await stack.client.get(f"{stack.gateway.url}/v1/requests/{ref}", headers=stack.auth)
    assert found.status_code == 200
    assert found.json()["status"] in ("unknown", "completed")
    listed = await stack.client.get(
        stack.gateway.url + "/v1/requests", params={"status": "unknown"}, headers=stack.auth
    )
    assert listed.status_code == 200
    # Plivo carried it out: its callback (with Plivo's own api_id) finds the request by its ref.
    await wait_until(lambda: stack.receiver.on("/hook"), timeout=15)
    event = json.loads(stack.receiver.on("/hook")[0].body)
    assert event["type"] == "request.completed"
    assert event["api_id"] == ref
    assert event["data"]["api_id"] == stack.sandbox_state.requests[0]["api_id"]
    done = await stack.status(ref)
    assert done["status"] == "completed"
    assert len(stack.sandbox_state.requests) == 1


async def test_an_unknown_outcome_whose_callback_beats_the_reply_still_completes(stack: Stack) -> None:
    """The callback arrives while the upstream reply is still on its way: it is parked under the
    ref and matched when the unknown request is stored."""
    await stack.configure_sandbox(replies=[{"status": 504, "executed": True}], callback_first=True)
    ref = _assert_unknown(await _unknown_submit(stack))
    await wait_until(lambda: stack.receiver.on("/hook"), timeout=15)
    assert (await stack.status(ref))["status"] == "completed"


async def test_idempotency_key_retries_get_the_same_unknown_answer(stack: Stack) -> None:
    await stack.configure_sandbox(replies=[{"status": 502}, {"status": 502}])
    key = {"Idempotency-Key": "unknown-1"}
    first = await _unknown_submit(stack, key)
    second = await _unknown_submit(stack, key)
    assert _assert_unknown(first) == _assert_unknown(second)
    assert first.json() == second.json()
    assert len(stack.sandbox_state.requests) == 1


async def test_a_read_timeout_is_an_unknown_outcome_sent_once(stack_factory: Any) -> None:
    stack = await stack_factory(UPSTREAM_READ_TIMEOUT=0.5)
    await stack.configure_sandbox(replies=[{"status": 200, "sleep": 1.5}])
    _assert_unknown(await _unknown_submit(stack))
    assert len(stack.sandbox_state.requests) == 1


async def test_an_unknown_request_without_callback_times_out(stack: Stack) -> None:
    await stack.configure_sandbox(replies=[{"status": 500}])
    body = {
        "resource": "Call/",
        "params": CALL,
        "timeout": 1,
        "targets": [{"type": "webhook", "url": stack.hook_url()}],
    }
    response = await stack.client.post(stack.gateway.url + "/v1/requests", json=body, headers=stack.auth)
    ref = _assert_unknown(response)
    found = await stack.status(ref)
    assert found["status"] == "unknown"
    assert "500" in found["upstream_error"]
    await wait_until(lambda: stack.receiver.on("/hook"), timeout=15)
    assert json.loads(stack.receiver.on("/hook")[0].body)["type"] == "request.timed_out"
    assert (await stack.status(ref))["status"] == "timed_out"


async def test_429_is_retried_and_released_for_the_next_try(stack: Stack) -> None:
    await stack.configure_sandbox(replies=[{"status": 429, "retry_after": 0}] * 4)
    key = {"Idempotency-Key": "rate-1"}
    limited = await _unknown_submit(stack, key)
    assert limited.status_code == 429
    retried = await _unknown_submit(stack, key)
    assert retried.status_code == 202
    assert len(stack.sandbox_state.requests) == 5
