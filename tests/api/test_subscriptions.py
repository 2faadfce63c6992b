"""Subscriptions API: create / list / get / delete, validation, SSRF refusals, fan-out matching."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.conftest import Stack
from tests.support.receiver import wait_until
from tests.support.scripted import ScriptedEndpoint

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


@pytest.fixture
async def endpoint() -> AsyncIterator[ScriptedEndpoint]:
    ep = ScriptedEndpoint().start()
    yield ep
    ep.stop()


async def subscribe(stack: Stack, **body: Any) -> Any:
    return await stack.client.post(stack.gateway.url + "/v1/subscriptions", json=body, headers=stack.auth)


async def test_create_list_get_delete(stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint) -> None:
    stack: Stack = await stack_factory(worker=False)
    created = await subscribe(
        stack, url=endpoint.url(), event_types=["request.completed", "*"], description="billing"
    )
    assert created.status_code == 201, created.text
    body = created.json()
    sub = body["subscription"]
    assert set(body) == {"api_id", "message", "subscription"}
    assert sub["id"].startswith("sub_") and sub["secret"].startswith("whsec_")
    assert sub["status"] == "active" and sub["event_types"] == ["*", "request.completed"]
    assert created.headers["location"] == f"/v1/subscriptions/{sub['id']}"
    for _ in range(2):
        assert (await subscribe(stack, url=endpoint.url(), event_types=["call.status"])).status_code == 201

    url = stack.gateway.url + "/v1/subscriptions"
    listed = (await stack.client.get(url, params={"limit": 2}, headers=stack.auth)).json()
    assert listed["meta"]["total_count"] == 3 and listed["meta"]["limit"] == 2
    assert listed["meta"]["next"] == "/v1/subscriptions?limit=2&offset=2"
    assert len(listed["objects"]) == 2 and "secret" not in listed["objects"][0]
    for bad in ({"limit": 0}, {"limit": 21}, {"offset": -1}):
        answer = await stack.client.get(url, params=bad, headers=stack.auth)
        assert answer.status_code == 400 and set(answer.json()) == {"api_id", "error"}

    one = await stack.client.get(f"{url}/{sub['id']}", headers=stack.auth)
    assert one.status_code == 200 and one.json()["subscription"]["secret"] == sub["secret"]
    gone = await stack.client.delete(f"{url}/{sub['id']}", headers=stack.auth)
    assert gone.status_code == 204 and gone.content == b""
    assert (await stack.client.get(f"{url}/{sub['id']}", headers=stack.auth)).status_code == 404
    assert (await stack.client.delete(f"{url}/{sub['id']}", headers=stack.auth)).status_code == 404
    assert (await stack.client.get(url)).status_code == 401


async def test_invalid_bodies(stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint) -> None:
    stack: Stack = await stack_factory(worker=False)
    url = stack.gateway.url + "/v1/subscriptions"
    form = await stack.client.post(url, data={"url": endpoint.url()}, headers=stack.auth)
    assert form.status_code == 415
    cases = [
        ({"url": endpoint.url(), "event_types": ["nope"]}, "event_types"),
        ({"url": endpoint.url(), "event_types": []}, "event_types"),
        ({"url": "ftp://x/", "event_types": ["*"]}, "url"),
        ({"url": endpoint.url(), "event_types": ["*"], "retry_schedule": [-1]}, "retry_schedule"),
        ({"url": endpoint.url(), "event_types": ["*"], "extra": 1}, "extra"),
        ({"event_types": ["*"]}, "url"),
    ]
    for body, field in cases:
        answer = await stack.client.post(url, json=body, headers=stack.auth)
        assert answer.status_code == 400, (body, answer.text)
        assert field in answer.json()["error"]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",  # loopback
        "[::1]",
        "10.1.2.3",  # private
        "192.168.0.10",
        "[fd00::1]",  # unique local
        "169.254.169.254",  # link-local: cloud metadata
        "[fe80::1]",
        "224.0.0.1",  # multicast
        "[ff02::1]",
        "100.64.0.1",  # CGNAT
        "0.0.0.0",  # unspecified
        "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
        "[::ffff:169.254.169.254]",
        "localhost",  # a name that resolves to loopback
    ],
)
async def test_ssrf_refusals_at_subscription_time(stack_factory: Callable[..., Any], host: str) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_ALLOW_PRIVATE_WEBHOOKS=False)
    answer = await subscribe(stack, url=f"http://{host}:8080/hook", event_types=["*"])
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("url: ")


async def test_cidr_allowlist_admits_a_private_range(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    stack: Stack = await stack_factory(
        worker=False, GATEWAY_ALLOW_PRIVATE_WEBHOOKS=False, GATEWAY_WEBHOOK_ALLOW_CIDRS="127.0.0.0/8"
    )
    assert (await subscribe(stack, url=endpoint.url(), event_types=["*"])).status_code == 201
    refused = await subscribe(stack, url="http://10.0.0.1/hook", event_types=["*"])
    assert refused.status_code == 400


async def test_events_reach_matching_subscriptions_only(stack: Stack, endpoint: ScriptedEndpoint) -> None:
    subs = {}
    for name, types in {"all": ["*"], "done": ["request.completed"], "calls": ["call.status"]}.items():
        answer = await subscribe(stack, url=endpoint.url(f"/{name}"), event_types=types)
        subs[name] = answer.json()["subscription"]
    response = await stack.submit(
        {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    )
    assert response.status_code == 202
    await wait_until(lambda: endpoint.on("/all") and endpoint.on("/done") and stack.receiver.on("/hook"))
    await asyncio.sleep(0.3)
    assert endpoint.on("/calls") == []
    assert len(endpoint.on("/all")) == len(endpoint.on("/done")) == 1
    for name in ("all", "done"):
        hook = endpoint.on(f"/{name}")[0]
        event = Webhook(subs[name]["secret"]).verify(hook.body, hook.headers)
        assert event["type"] == "request.completed"
        assert event["api_id"] == response.json()["api_id"]
        assert hook.headers["webhook-id"] == event["id"]
    # Each subscription signs with its own secret, not the others'.
    hook = endpoint.on("/all")[0]
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(subs["done"]["secret"]).verify(hook.body, hook.headers)
