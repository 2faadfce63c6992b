"""Plivo's conventions on every answer, checked against the app's own OpenAPI schema.

The sweep walks every ``/v1/`` operation the schema documents, calls it for real (success, no
credentials, unknown id, bad query) and validates each answer against the schema documented for
that operation and status. Then the errors that need a set-up of their own (413, 415, 422, 429,
502, 503, unknown routes and methods) are produced and checked the same way.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from tests.conftest import Stack
from tests.support.receiver import wait_until
from tooling.embedded_redis import free_port

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}
Ids = dict[str, str]


def check(doc: dict[str, Any], method: str, template: str, response: httpx.Response) -> None:
    """``response`` has a status documented for the operation and the body documented for it."""
    documented = doc["paths"][template][method]["responses"]
    status = str(response.status_code)
    assert status in documented, (method, template, status, response.text)
    content = documented[status].get("content") or {}
    if "application/json" not in content:
        return
    schema = {**content["application/json"]["schema"], "components": doc["components"]}
    Draft202012Validator(schema).validate(response.json())
    body = response.json()
    assert isinstance(body.get("api_id"), str) and body["api_id"]
    assert ("error" in body) if response.status_code >= 400 else ("message" in body), body


def check_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"api_id", "error"} and body["error"], body
    return body


async def prepare(stack: Stack) -> Ids:
    """A completed request, a subscription and a succeeded delivery to point the calls at."""
    hook = {"url": stack.hook_url("/sub"), "event_types": ["*"]}
    sub = await stack.client.post(stack.gateway.url + "/v1/subscriptions", json=hook, headers=stack.auth)
    api_id = (await stack.submit({"resource": "Call/", "params": CALL})).json()["api_id"]

    async def delivered() -> bool:
        found = await stack.status(api_id)
        return bool(found["status"] == "completed" and stack.receiver.on("/sub"))

    await wait_until(delivered)
    event_id = (await stack.status(api_id))["events"][0]["id"]
    deliveries = await stack.client.get(stack.gateway.url + "/v1/deliveries", headers=stack.auth)

    async def succeeded() -> bool:
        found = await stack.client.get(stack.gateway.url + "/v1/deliveries", headers=stack.auth)
        return any(d["status"] == "succeeded" for d in found.json()["objects"])

    await wait_until(succeeded)
    deliveries = await stack.client.get(stack.gateway.url + "/v1/deliveries", headers=stack.auth)
    delivery_id = next(d["id"] for d in deliveries.json()["objects"] if d["status"] == "succeeded")
    token = await stack.client.post(stack.gateway.url + "/v1/proxy_tokens", headers=stack.auth)
    return {
        "token_id": token.json()["proxy_token"]["id"],
        "api_id": api_id,
        "sub_id": sub.json()["subscription"]["id"],
        "event_id": event_id,
        "delivery_id": delivery_id,
        "auth_id": stack.settings.PLIVO_AUTH_ID,
        "resource": "Message/",
    }


def success_call(method: str, template: str, ids: Ids, stack: Stack) -> dict[str, Any]:
    """httpx arguments for a call that succeeds."""
    path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
    args: dict[str, Any] = {"method": method.upper(), "url": stack.gateway.url + path, "headers": stack.auth}
    if template.startswith("/v1/Account/"):
        args["auth"] = (stack.settings.PLIVO_AUTH_ID, stack.settings.PLIVO_AUTH_TOKEN.get_secret_value())
        args["headers"] = {}
        args["json" if method == "post" else "params"] = {"src": "1", "dst": "2", "text": "hi"}
    elif method == "post" and template == "/v1/requests":
        args["json"] = {"resource": "Call/", "params": CALL}
    elif method == "post" and template == "/v1/subscriptions":
        args["json"] = {"url": stack.hook_url("/other"), "event_types": ["request.completed"]}
    elif template.endswith("/events"):
        args["params"] = {"duration": 0.1}
    return args


def operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(m, p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/v1/")]
    # The DELETE of a subscription goes last: the other calls use that subscription.
    return sorted(found, key=lambda op: op == ("delete", "/v1/subscriptions/{sub_id}"))


async def test_every_documented_operation_answers_in_its_documented_shape(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(
        GATEWAY_PROXY_PASSTHROUGH=True, GATEWAY_PROXY_TOKEN_SECRET="conformance-" + "s" * 32
    )
    doc = (await stack.client.get(stack.gateway.url + "/openapi.json")).json()
    ids = await prepare(stack)
    ops = operations(doc)
    assert len(ops) >= 15
    for method, template in ops:
        args = success_call(method, template, ids, stack)
        ok = await stack.client.request(**args)
        assert ok.status_code < 300, (method, template, ok.text)
        check(doc, method, template, ok)
        anonymous = await stack.client.request(**{**args, "headers": {}, "auth": None})
        check_error(anonymous, 401)
        check(doc, method, template, anonymous)
        if "{" in template and not template.startswith("/v1/Account/"):
            missing = re.sub(r"\{(\w+)\}", "nope", template)
            unknown = await stack.client.request(**{**args, "url": stack.gateway.url + missing})
            check_error(unknown, 404)
            check(doc, method, template, unknown)
        if method == "get" and "limit" in {
            p["name"] for p in doc["paths"][template][method].get("parameters", [])
        }:
            bad = await stack.client.request(**{**args, "params": {"limit": 99}})
            assert "limit" in check_error(bad, 400)["error"]
            check(doc, method, template, bad)


async def test_body_errors_are_documented_and_shaped(stack_factory: Any) -> None:
    stack: Stack = await stack_factory()
    doc = (await stack.client.get(stack.gateway.url + "/openapi.json")).json()
    url = stack.gateway.url + "/v1/requests"
    form = await stack.client.post(url, data={"resource": "Call/"}, headers=stack.auth)
    check_error(form, 415)
    check(doc, "post", "/v1/requests", form)
    huge = b'{"resource": "Call/", "params": {"x": "' + b"y" * stack.settings.GATEWAY_MAX_BODY_BYTES + b'"}}'
    too_large = await stack.client.post(
        url, content=huge, headers={**stack.auth, "content-type": "application/json"}
    )
    check_error(too_large, 413)
    check(doc, "post", "/v1/requests", too_large)
    headers = {**stack.auth, "Idempotency-Key": "k-1"}
    first = await stack.client.post(url, json={"resource": "Call/", "params": CALL}, headers=headers)
    assert first.status_code == 202
    other = {"resource": "Call/", "params": {**CALL, "to": "14155550999"}}
    reused = await stack.client.post(url, json=other, headers=headers)
    assert "Idempotency-Key" in check_error(reused, 422)["error"]
    check(doc, "post", "/v1/requests", reused)
    await stack.configure_sandbox(replies=[{"status": 500, "error": "boom"}])
    failed = await stack.submit({"resource": "Call/", "params": CALL})
    assert failed.status_code == 502
    assert set(failed.json()) == {"api_id", "error", "status", "ref"}  # an unknown outcome
    check(doc, "post", "/v1/requests", failed)
    unreachable = await stack_factory(worker=False, PLIVO_API_URL=f"http://127.0.0.1:{free_port()}")
    refused = await unreachable.submit({"resource": "Call/", "params": CALL})
    check_error(refused, 502)
    check(doc, "post", "/v1/requests", refused)


async def test_unknown_routes_and_methods_are_plivo_shaped(stack: Stack) -> None:
    nowhere = await stack.client.get(stack.gateway.url + "/v1/nothing-here", headers=stack.auth)
    assert "/v1/nothing-here" in check_error(nowhere, 404)["error"]
    patch = await stack.client.patch(stack.gateway.url + "/v1/requests", headers=stack.auth)
    assert "PATCH" in check_error(patch, 405)["error"]
    assert "POST" in patch.headers["allow"]


async def test_redis_down_is_503_in_the_documented_shape(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    doc = (await stack.client.get(stack.gateway.url + "/openapi.json")).json()
    down = await stack.client.get(stack.gateway.url + "/v1/requests", headers=stack.auth)
    check_error(down, 503)
    assert down.headers["retry-after"]
    check(doc, "get", "/v1/requests", down)
