"""W3C traceparent: from the submit, through the stored request and the event, onto every webhook."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from gateway.infra import tracing
from tests.conftest import Stack
from tests.support.receiver import wait_until

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}
INCOMING = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def submit(stack: Stack, body: dict[str, Any], **headers: str) -> httpx.Response:
    url = stack.gateway.url + "/v1/requests"
    return await stack.client.post(url, json=body, headers={**stack.auth, **headers})


def test_traceparent_helpers() -> None:
    assert tracing.parse(INCOMING) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    for bad in (None, "", "01-" + INCOMING[3:], "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "garbage"):
        assert tracing.parse(bad) is None
    assert tracing.incoming_or_new(INCOMING) == INCOMING
    fresh = tracing.incoming_or_new("nonsense")
    assert tracing.parse(fresh) is not None and fresh != INCOMING
    child = tracing.parse(tracing.child(INCOMING))
    assert child is not None and child[0] == INCOMING[3:35] and child[1] != "00f067aa0ba902b7"


async def test_traceparent_reaches_the_event_and_the_webhook(stack_factory: Callable[..., Any]) -> None:
    stack: Stack = await stack_factory(GATEWAY_TRACE_PROPAGATION=True)
    target = [{"type": "webhook", "url": stack.hook_url()}]
    traced = await submit(
        stack, {"resource": "Call/", "params": CALL, "targets": target}, traceparent=INCOMING
    )
    untraced = await stack.submit({"resource": "Call/", "params": CALL, "targets": target})
    assert traced.status_code == untraced.status_code == 202
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 2, timeout=15)
    by_api = {json.loads(r.body)["api_id"]: r for r in stack.receiver.on("/hook")}
    hook = by_api[traced.json()["api_id"]]
    event = json.loads(hook.body)
    assert event["traceparent"] == INCOMING  # the stored context, as the caller sent it
    sent = tracing.parse(hook.headers["traceparent"])
    assert sent is not None and sent[0] == INCOMING[3:35] and sent[1] != INCOMING[36:52]
    other = by_api[untraced.json()["api_id"]]
    generated = tracing.parse(json.loads(other.body)["traceparent"])
    assert generated is not None and generated[0] != INCOMING[3:35]
    assert tracing.parse(other.headers["traceparent"]) is not None


async def test_no_traceparent_when_propagation_is_off(stack: Stack) -> None:
    body = {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    response = await submit(stack, body, traceparent=INCOMING)
    assert response.status_code == 202
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 1, timeout=15)
    (hook,) = stack.receiver.on("/hook")
    assert "traceparent" not in hook.headers and "traceparent" not in json.loads(hook.body)
