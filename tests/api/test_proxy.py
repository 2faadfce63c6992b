"""The drop-in proxy, driven by the official ``plivo`` SDK with only its base URL changed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import plivo
import plivo.exceptions
import plivo.rest.client
import pytest
from plivo.utils import validate_v3_signature
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.support.plivo_client import PlivoUserEndpoint
from tests.support.receiver import Received, wait_until
from tests.support.servers import ServerThread
from tests.workers import test_e2e

user_worker = test_e2e.user_worker  # the user's own arq worker process (a fixture)

TOKEN_SECRET = "proxy-secret-" + "s" * 32
CALLER = "14155550100"
CALLEE = "14155550123"


@pytest.fixture
def point_sdk_at() -> Iterator[Any]:
    """Point the SDK's module-level base URLs (REST and voice) at a gateway."""
    names = ("PLIVO_API_BASE_URI", "API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1")
    names += ("API_VOICE_BASE_URI_FALLBACK_2",)
    saved = {name: getattr(plivo.rest.client, name) for name in names}

    def point(base_url: str) -> None:
        for name in names:
            setattr(plivo.rest.client, name, base_url + "/v1/Account")

    yield point
    for name, value in saved.items():
        setattr(plivo.rest.client, name, value)


async def issue_token(stack: Stack) -> str:
    url = stack.gateway.url + "/v1/proxy_tokens"
    response = await stack.client.post(url, json={"description": "billing"}, headers=stack.auth)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["message"] == "proxy token created"
    token: str = body["proxy_token"]["token"]
    return token


def validates(hit: Received, url: str, token: str) -> bool:
    """What a Plivo user's receiver does with a callback: the SDK's own V3 check."""
    params = dict(parse_qsl(hit.body.decode(), keep_blank_values=True))
    headers = hit.headers
    return bool(
        validate_v3_signature(
            "POST", url, headers["x-plivo-signature-v3-nonce"], token, headers["x-plivo-signature-v3"], params
        )
    )


async def test_the_plivo_sdk_works_unchanged_through_the_gateway(
    stack_factory: Any, point_sdk_at: Any, redis: Redis
) -> None:
    stack: Stack = await stack_factory(GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    token = await issue_token(stack)
    point_sdk_at(stack.gateway.url)
    client = plivo.RestClient(stack.settings.PLIVO_AUTH_ID, token)
    subscription = {"url": stack.hook_url("/subscriber"), "event_types": ["request.completed"]}
    await stack.client.post(stack.gateway.url + "/v1/subscriptions", json=subscription, headers=stack.auth)

    # Synchronous: Plivo's answer, unchanged, and nothing substituted upstream.
    sent = await asyncio.to_thread(client.messages.create, src=CALLER, dst=CALLEE, text="hi")
    upstream = stack.sandbox_state.requests[-1]
    assert sent.api_id == upstream["api_id"]
    assert sent.message_uuid and sent.message == "message(s) queued"
    assert "callback_url" not in upstream["params"]

    # Asynchronous: the gateway's receiver goes upstream; the client's receiver gets the callback.
    client_url = stack.hook_url("/client-callback")
    spawned = await asyncio.to_thread(
        client.calls.create, CALLER, CALLEE, "https://example.com/answer", callback_url=client_url
    )
    assert spawned.message == "async api spawned"
    upstream = stack.sandbox_state.requests[-1]
    assert upstream["params"]["callback_url"].startswith(stack.settings.callback_url)
    await wait_until(lambda: stack.receiver.on("/client-callback") and stack.receiver.on("/subscriber"))
    (hit,) = stack.receiver.on("/client-callback")
    assert validates(hit, client_url, token)
    assert not validates(hit, client_url, "some-other-token")
    relayed = dict(parse_qsl(hit.body.decode()))
    assert relayed["api_id"] == spawned.api_id and relayed["message"] == "call fired"
    event = json.loads(stack.receiver.on("/subscriber")[0].body)
    assert event["api_id"] == spawned.api_id and event["type"] == "request.completed"

    # Plivo's refusals reach the SDK as they would from Plivo: same status, same exception.
    await stack.configure_sandbox(replies=[{"status": 400, "error": "invalid dst number"}])
    with pytest.raises(plivo.exceptions.ValidationError, match="invalid dst number"):
        await asyncio.to_thread(client.messages.create, src=CALLER, dst=CALLEE, text="hi")
    await stack.configure_sandbox(replies=[{"status": 404, "error": "no such call"}])
    with pytest.raises(plivo.exceptions.ResourceNotFoundError, match="no such call"):
        await asyncio.to_thread(client.calls.get, "0000-no-such-call")

    # Redis keeps no token: only its hash.
    dump = [await redis.hgetall(k) async for k in redis.scan_iter(match="*ptok*")]
    assert dump and token not in json.dumps(dump)


async def test_wrong_and_revoked_tokens_are_refused_as_plivo_would(
    stack_factory: Any, point_sdk_at: Any
) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    token = await issue_token(stack)
    point_sdk_at(stack.gateway.url)
    auth_id = stack.settings.PLIVO_AUTH_ID
    real = stack.settings.PLIVO_AUTH_TOKEN.get_secret_value()
    for password in (token[:-2] + "xx", real):  # forged; the real token without pass-through
        forged = plivo.RestClient(auth_id, password)
        with pytest.raises(plivo.exceptions.AuthenticationError):
            await asyncio.to_thread(forged.messages.create, src=CALLER, dst=CALLEE, text="hi")
    token_id = token.split("_")[1]
    revoked = await stack.client.delete(f"{stack.gateway.url}/v1/proxy_tokens/{token_id}", headers=stack.auth)
    assert revoked.status_code == 204
    client = plivo.RestClient(auth_id, token)
    with pytest.raises(plivo.exceptions.AuthenticationError):
        await asyncio.to_thread(client.messages.create, src=CALLER, dst=CALLEE, text="hi")
    assert len(stack.sandbox_state.requests) == 0  # nothing refused here ever went upstream


async def test_pass_through_credentials_and_a_get_callback(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(GATEWAY_PROXY_PASSTHROUGH=True)
    endpoint = PlivoUserEndpoint()
    server = ServerThread(endpoint.app()).start()
    try:
        auth = (stack.settings.PLIVO_AUTH_ID, stack.settings.PLIVO_AUTH_TOKEN.get_secret_value())
        url = f"{stack.gateway.url}/v1/Account/{auth[0]}/Call/"
        client_url = server.url + "/plivo/result?account=7"
        params = {"from": CALLER, "to": CALLEE, "answer_url": "https://example.com/a"}
        body = {**params, "callback_url": client_url, "callback_method": "GET"}
        spawned = await stack.client.post(url, json=body, auth=auth)
        assert spawned.status_code in (200, 201) and spawned.json()["message"] == "async api spawned"
        await wait_until(lambda: endpoint.hits)
        (hit,) = endpoint.hits
        assert hit.method == "GET" and hit.params["api_id"] == spawned.json()["api_id"]
        nonce, signature = hit.headers["x-plivo-signature-v3-nonce"], hit.headers["x-plivo-signature-v3"]
        assert validate_v3_signature("GET", server.url + hit.path_and_query, nonce, auth[1], signature)
        sync = await stack.client.get(url, params=params, auth=auth)
        assert sync.status_code == 200 and sync.json()["message"] == "call fired"
    finally:
        server.stop()


def test_relay_signature_for_get_validates_with_the_sdk() -> None:
    from gateway.domain.targets import RelayTarget, target_from_json
    from gateway.settings import Settings
    from workers.relay import build

    settings = Settings(_env_file=None, PLIVO_AUTH_TOKEN="real-token-" + "x" * 20)  # type: ignore[call-arg]
    target = {"type": "plivo_relay", "url": "https://client.example/cb?x=1", "method": "GET", "token_id": ""}
    event = {"type": "request.completed", "data": {"api_id": "a-1", "message": "call fired"}}
    relay = target_from_json(target)
    assert isinstance(relay, RelayTarget)
    req = build(settings, relay, event["data"])
    assert req.method == "GET" and urlsplit(req.url).query.startswith("x=1&")
    nonce, signature = req.headers["x-plivo-signature-v3-nonce"], req.headers["x-plivo-signature-v3"]
    assert validate_v3_signature("GET", req.url, nonce, "real-token-" + "x" * 20, signature)


async def test_a_tokens_queue_target_and_metadata_ride_along(
    stack_factory: Any, point_sdk_at: Any, redis: Redis, user_worker: tuple[str, str]
) -> None:
    queue, out_list = user_worker
    stack: Stack = await stack_factory(GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    spec = {
        "description": "billing service",
        "targets": [{"type": "queue", "queue": queue, "function": "on_result"}],
        "metadata": {"team": "billing"},
    }
    issued = await stack.client.post(stack.gateway.url + "/v1/proxy_tokens", json=spec, headers=stack.auth)
    assert issued.status_code == 201 and issued.json()["proxy_token"]["targets"][0]["queue"] == queue
    token = issued.json()["proxy_token"]["token"]
    point_sdk_at(stack.gateway.url)
    client = plivo.RestClient(stack.settings.PLIVO_AUTH_ID, token)
    client_url = stack.hook_url("/client-callback")
    spawned = await asyncio.to_thread(
        client.calls.create, CALLER, CALLEE, "https://example.com/answer", callback_url=client_url
    )
    await wait_until(lambda: redis.llen(out_list), timeout=20)
    (job_event,) = [json.loads(e) for e in await redis.lrange(out_list, 0, -1)]
    assert job_event["api_id"] == spawned.api_id and job_event["metadata"] == {"team": "billing"}
    await wait_until(lambda: stack.receiver.on("/client-callback"))
    assert validates(stack.receiver.on("/client-callback")[0], client_url, token)


async def test_token_bodies_are_validated(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    url = stack.gateway.url + "/v1/proxy_tokens"
    bad = await stack.client.post(
        url, json={"targets": [{"type": "queue", "queue": "q"}]}, headers=stack.auth
    )
    assert bad.status_code == 400 and "targets.0" in bad.json()["error"]
    form = await stack.client.post(url, data={"description": "x"}, headers=stack.auth)
    assert form.status_code == 415
    unknown = await stack.client.delete(url + "/0123456789abcdef", headers=stack.auth)
    assert unknown.status_code == 404 and set(unknown.json()) == {"api_id", "error"}


# --- scope: the resources a token may reach ------------------------------------------------------


async def issue_scoped(stack: Stack, resources: list[str] | None = None) -> dict[str, Any]:
    spec = {} if resources is None else {"resources": resources}
    response = await stack.client.post(stack.gateway.url + "/v1/proxy_tokens", json=spec, headers=stack.auth)
    assert response.status_code == 201, response.text
    token: dict[str, Any] = response.json()["proxy_token"]
    return token


async def proxied(stack: Stack, token: str, method: str, resource: str) -> int:
    """The proxy's status for ``resource``; a refusal must be Plivo's error shape."""
    auth_id = stack.settings.PLIVO_AUTH_ID
    url = f"{stack.gateway.url}/v1/Account/{auth_id}/{resource}"
    params = {"src": CALLER, "dst": CALLEE, "text": "hi"}
    if method == "POST":
        response = await stack.client.post(url, json=params, auth=(auth_id, token))
    else:
        response = await stack.client.request(method, url, params=params, auth=(auth_id, token))
    if response.status_code == 403:
        assert set(response.json()) == {"api_id", "error"}, response.text
    return response.status_code


async def test_a_default_token_reaches_messages_and_calls_only(stack_factory: Any, point_sdk_at: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    issued = await issue_scoped(stack)
    token = issued["token"]
    call = "0c2d7e1a-6b7e-4a3e-9a43-3c5b8f3f1d2e"
    for method, resource in [
        ("POST", "Message/"),
        ("GET", "Message/"),
        ("GET", "Message"),
        ("GET", f"Call/{call}/"),
        ("POST", f"Call/{call}/Record/"),
        ("DELETE", f"Call/{call}/Record/"),
    ]:
        assert await proxied(stack, token, method, resource) == 200, (method, resource)
    reached = len(stack.sandbox_state.requests)
    for method, resource in [
        ("GET", "Subaccount/"),
        ("POST", "Subaccount/"),
        ("GET", "Subaccount/SA0123456789/"),
        ("GET", ""),  # the account root: account details
        ("POST", ""),
        ("GET", "Number/"),
        ("GET", "MessageX/"),  # whole segments: Message/ does not admit MessageX/
        ("GET", "Callback/"),
        ("GET", "message/"),
    ]:
        assert await proxied(stack, token, method, resource) == 403, (method, resource)
    assert len(stack.sandbox_state.requests) == reached  # nothing refused went upstream
    # The SDK raises what Plivo's own 403 raises.
    point_sdk_at(stack.gateway.url)
    client = plivo.RestClient(stack.settings.PLIVO_AUTH_ID, token)
    with pytest.raises(plivo.exceptions.ForbiddenError, match="may not access 'Subaccount/'"):
        await asyncio.to_thread(client.subaccounts.create, "ops", enabled=True)
    assert issued["resources"] == ["Message/", "Call/"]


async def test_a_token_reaches_what_it_names(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    issued = await issue_scoped(stack, ["Subaccount", "Number/", "Call/abc/", "Number/"])
    assert issued["resources"] == ["Subaccount/", "Number/", "Call/abc/"]
    token = issued["token"]
    assert await proxied(stack, token, "GET", "Subaccount/") == 200
    assert await proxied(stack, token, "POST", "Subaccount/SA0123456789/") == 200
    assert await proxied(stack, token, "GET", "Number/14155550100/") == 200
    assert await proxied(stack, token, "GET", "Call/abc/Record/") == 200
    assert await proxied(stack, token, "GET", "Call/abcd/") == 403
    assert await proxied(stack, token, "GET", "Call/") == 403
    assert await proxied(stack, token, "POST", "Message/") == 403  # naming replaces the default
    assert await proxied(stack, token, "GET", "SubaccountX/") == 403


async def test_a_token_stored_before_resources_gets_the_default(stack_factory: Any, redis: Redis) -> None:
    from gateway.services.proxy_tokens import derive, token_hash

    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    token_id = "00112233445566ff"
    token = derive(TOKEN_SECRET, token_id)
    # The record exactly as POST /v1/proxy_tokens wrote it before tokens had resources.
    record = {"hash": token_hash(token), "created_at": "1", "description": "old", "targets": "[]"}
    await redis.hset(
        f"{stack.settings.GATEWAY_KEY_PREFIX}ptok:{token_id}", mapping={**record, "metadata": "{}"}
    )
    assert await proxied(stack, token, "POST", "Message/") == 200
    assert await proxied(stack, token, "GET", "Call/x/Record/") == 200
    assert await proxied(stack, token, "GET", "Subaccount/") == 403
    assert await proxied(stack, token, "GET", "Number/") == 403
    assert await proxied(stack, token, "GET", "") == 403


async def test_token_resources_are_validated(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_TOKEN_SECRET=TOKEN_SECRET)
    url = stack.gateway.url + "/v1/proxy_tokens"
    for resources, where in [
        ([], "resources"),
        (["Message/", "../Subaccount/"], "resources.1"),
        (["Call/../Subaccount/"], "resources.0"),
        (["Call/.."], "resources.0"),
        (["https://api.plivo.com/v1/Account/X/Subaccount/"], "resources.0"),
        (["/v1/Account/X/Subaccount/"], "resources.0"),
        (["/Subaccount/"], "resources.0"),
        ([""], "resources.0"),
        (["/"], "resources.0"),
        (["Message/*"], "resources.0"),
        ([f"Number/{i}/" for i in range(21)], "resources"),
        ("Message/", "resources"),
    ]:
        response = await stack.client.post(url, json={"resources": resources}, headers=stack.auth)
        assert response.status_code == 400, (resources, response.text)
        assert response.json()["error"].startswith(where + ":"), (resources, response.text)
    twenty = [f"Number/{i}/" for i in range(20)]
    assert (await issue_scoped(stack, twenty))["resources"] == twenty


async def test_real_credentials_are_not_scoped(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_PROXY_PASSTHROUGH=True)
    real = stack.settings.PLIVO_AUTH_TOKEN.get_secret_value()
    for resource in ("Subaccount/", "Number/", "Message/"):
        assert await proxied(stack, real, "GET", resource) == 200, resource
