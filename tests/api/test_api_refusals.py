"""The API refuses what cannot work instead of accepting it: unknown query parameters, retries and
replays that would fail at once, status URLs that cannot be honoured, refusals that name the
setting an operator can change."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.support.receiver import wait_until

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


@pytest.mark.parametrize(
    ("path", "query", "named"),
    [
        ("/v1/deliveries", {"status": "failed", "subscription": "sub_x"}, "subscription"),
        ("/v1/subscriptions", {"status": "disabled"}, "status"),
        ("/v1/requests", {"state": "pending"}, "state"),
        ("/v1/callbacks/unmatched", {"since": "1"}, "since"),
        ("/v1/requests/nope", {"timeout": "3"}, "timeout"),
    ],
)
async def test_unknown_query_parameters_are_400_naming_them(
    stack_factory: Any, path: str, query: dict[str, str], named: str
) -> None:
    stack: Stack = await stack_factory(worker=False)
    response = await stack.client.get(stack.gateway.url + path, params=query, headers=stack.auth)
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"api_id", "error"}
    assert repr(named) in body["error"]


async def test_known_query_parameters_still_work(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False)
    for path, query in [
        ("/v1/deliveries", {"status": "failed", "subscription_id": "sub_x", "limit": "5"}),
        ("/v1/requests", {"status": "pending", "offset": "0"}),
        ("/v1/subscriptions", {"limit": "2"}),
    ]:
        response = await stack.client.get(stack.gateway.url + path, params=query, headers=stack.auth)
        assert response.status_code == 200, (path, response.text)


async def _failed_delivery(stack: Stack) -> tuple[str, str, str]:
    """A subscription whose endpoint answers 410 (so it is disabled), and its failed delivery."""
    hook = {"url": stack.hook_url("/gone"), "event_types": ["*"]}
    stack.receiver.statuses = [410]
    sub = await stack.client.post(stack.gateway.url + "/v1/subscriptions", json=hook, headers=stack.auth)
    sub_id = sub.json()["subscription"]["id"]
    assert (await stack.submit({"resource": "Call/", "params": CALL})).status_code == 202

    async def failed() -> list[dict[str, Any]]:
        found = await stack.client.get(
            stack.gateway.url + "/v1/deliveries",
            params={"status": "failed", "subscription_id": sub_id},
            headers=stack.auth,
        )
        return list(found.json()["objects"])

    await wait_until(lambda: _nonempty(failed), timeout=20)
    delivery = (await failed())[0]
    state = await stack.client.get(f"{stack.gateway.url}/v1/subscriptions/{sub_id}", headers=stack.auth)
    assert state.json()["subscription"]["status"] == "disabled"
    return sub_id, delivery["id"], delivery["event_id"]


async def _nonempty(probe: Any) -> bool:
    return bool(await probe())


async def test_retry_and_replay_on_a_disabled_subscription_say_enable_it_first(stack: Stack) -> None:
    sub_id, delivery_id, event_id = await _failed_delivery(stack)
    base = stack.gateway.url
    retry = await stack.client.post(f"{base}/v1/deliveries/{delivery_id}/retry", headers=stack.auth)
    assert retry.status_code == 400
    assert "enable it first" in retry.json()["error"]
    bulk = await stack.client.post(f"{base}/v1/subscriptions/{sub_id}/replay", headers=stack.auth)
    assert bulk.status_code == 400
    assert "enable it first" in bulk.json()["error"]
    replay = await stack.client.post(f"{base}/v1/events/{event_id}/replay", headers=stack.auth)
    assert replay.status_code == 202
    assert replay.json()["deliveries"] == []
    assert "enable it first" in replay.json()["skipped"][0]["reason"]
    # Enabled again, the same retry goes ahead.
    enabled = await stack.client.post(f"{base}/v1/subscriptions/{sub_id}/enable", headers=stack.auth)
    assert enabled.status_code == 200
    again = await stack.client.post(f"{base}/v1/deliveries/{delivery_id}/retry", headers=stack.auth)
    assert again.status_code == 202


async def test_retrying_a_succeeded_delivery_says_it_is_sent_again(stack: Stack) -> None:
    hook = {"url": stack.hook_url("/ok"), "event_types": ["*"]}
    await stack.client.post(stack.gateway.url + "/v1/subscriptions", json=hook, headers=stack.auth)
    assert (await stack.submit({"resource": "Call/", "params": CALL})).status_code == 202
    await wait_until(lambda: stack.receiver.on("/ok"), timeout=15)

    async def succeeded() -> list[dict[str, Any]]:
        found = await stack.client.get(
            stack.gateway.url + "/v1/deliveries", params={"status": "succeeded"}, headers=stack.auth
        )
        return list(found.json()["objects"])

    await wait_until(lambda: _nonempty(succeeded), timeout=15)
    delivery_id = (await succeeded())[0]["id"]
    retry = await stack.client.post(
        f"{stack.gateway.url}/v1/deliveries/{delivery_id}/retry", headers=stack.auth
    )
    assert retry.status_code == 202
    assert "sent again" in retry.json()["message"]
    await wait_until(lambda: len(stack.receiver.on("/ok")) == 2, timeout=15)
    first, second = stack.receiver.on("/ok")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]


@pytest.mark.parametrize(
    ("resource", "params", "name"),
    [
        ("Message/", {"src": "1", "dst": "2", "text": "hi", "url": "https://example.com/mine"}, "url"),
        ("Call/", {**CALL, "hangup_url": "https://example.com/hangup"}, "hangup_url"),
        ("Call/", {**CALL, "ring_url": "https://example.com/ring"}, "ring_url"),
    ],
)
async def test_status_events_with_the_callers_own_status_url_is_refused(
    stack_factory: Any, redis: Redis, resource: str, params: dict[str, Any], name: str
) -> None:
    stack: Stack = await stack_factory(worker=False)
    response = await stack.submit({"resource": resource, "params": params, "status_events": True})
    assert response.status_code == 400
    assert f"params.{name}" in response.json()["error"]
    assert stack.sandbox_state.requests == []
    # Without status_events the caller's URL is Plivo's to call: accepted and passed on as it is.
    plain = await stack.submit({"resource": resource, "params": params})
    assert plain.status_code == 202
    assert stack.sandbox_state.requests[0]["params"][name] == params[name]


async def test_a_private_address_refusal_names_the_settings(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_ALLOW_PRIVATE_WEBHOOKS=False)
    sub = await stack.client.post(
        stack.gateway.url + "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/h", "event_types": ["*"]},
        headers=stack.auth,
    )
    assert sub.status_code == 400
    error = sub.json()["error"]
    assert "GATEWAY_ALLOW_PRIVATE_WEBHOOKS" in error
    assert "GATEWAY_WEBHOOK_ALLOW_CIDRS" in error
    body = {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": "http://10.1.2.3/h"}]}
    submit = await stack.submit(body)
    assert submit.status_code == 400
    assert "GATEWAY_ALLOW_PRIVATE_WEBHOOKS" in submit.json()["error"]
