"""The Plivo sandbox: Plivo-shaped replies, and callbacks signed so the official SDK accepts them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import httpx
import plivo.utils as plivo_utils
import pytest

from tests.support.receiver import Received, WebhookReceiver, wait_until
from tests.support.servers import ServerThread
from tooling.sandbox import SandboxState, create_sandbox

AUTH_ID = "MAABCDEFGHIJKLMNOPQR"
TOKEN = "sandbox-secret-token-0123456789"


@dataclass
class Sandbox:
    url: str
    state: SandboxState
    client: httpx.AsyncClient
    receiver: WebhookReceiver
    receiver_url: str

    async def call(self, resource: str, body: dict[str, object], **kw: object) -> httpx.Response:
        return await self.client.post(
            f"{self.url}/v1/Account/{AUTH_ID}/{resource}", json=body, auth=(AUTH_ID, TOKEN), **kw
        )


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    app = create_sandbox(AUTH_ID, TOKEN)
    server = ServerThread(app).start()
    receiver = WebhookReceiver()
    receiver_server = ServerThread(receiver.app()).start()
    async with httpx.AsyncClient() as client:
        yield Sandbox(server.url, app.state.sandbox, client, receiver, receiver_server.url)
    server.stop()
    receiver_server.stop()


def _form(r: Received) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in parse_qsl(r.body.decode(), keep_blank_values=True):
        out[k] = [*out[k], v] if isinstance(out.get(k), list) else ([out[k], v] if k in out else v)
    return out


async def test_auth_and_content_type_are_checked(sandbox: Sandbox) -> None:
    url = f"{sandbox.url}/v1/Account/{AUTH_ID}/Call/"
    bad = await sandbox.client.post(url, json={}, auth=(AUTH_ID, "wrong"))
    assert bad.status_code == 401 and set(bad.json()) == {"api_id", "error"}
    other = await sandbox.client.post(
        f"{sandbox.url}/v1/Account/MAOTHERACCOUNT000000/Call/", json={}, auth=(AUTH_ID, TOKEN)
    )
    assert other.status_code == 401
    form = await sandbox.client.post(url, data={"a": "b"}, auth=(AUTH_ID, TOKEN))
    assert form.status_code == 415
    missing = await sandbox.call("Call/", {"from": "1", "to": "2"})
    assert missing.status_code == 400
    assert missing.json()["error"] == "answer_url parameter is missing"


async def test_sync_call_replies_with_result(sandbox: Sandbox) -> None:
    reply = await sandbox.call("Call/", {"from": "1", "to": "2", "answer_url": "https://a"})
    assert reply.status_code == 200
    assert reply.json()["message"] == "call fired"
    assert isinstance(reply.json()["request_uuid"], str)


async def test_v3_form_callback_validates_with_sdk(sandbox: Sandbox) -> None:
    # (The SDK itself fails on non-ASCII query strings, so this one stays ASCII.)
    cb_url = sandbox.receiver_url + "/cb/?x=1&y=two%20words#ct=2000&rt=5000"
    reply = await sandbox.call(
        "Call/",
        {"from": "1", "to": "2<3", "answer_url": "https://a", "callback_url": cb_url},
    )
    assert reply.json()["message"] == "async api spawned"
    await wait_until(lambda: sandbox.receiver.received)
    got = sandbox.receiver.received[0]
    params = _form(got)
    assert params["api_id"] == reply.json()["api_id"]
    assert params["message"] == "calls fired"
    assert isinstance(params["request_uuid"], list) and len(params["request_uuid"]) == 2
    assert plivo_utils.validate_v3_signature(
        "POST",
        cb_url,
        got.headers["x-plivo-signature-v3-nonce"],
        TOKEN,
        got.headers["x-plivo-signature-v3"],
        params,
    )


async def test_v3_json_and_get_callbacks_validate_with_sdk(sandbox: Sandbox) -> None:
    await sandbox.client.post(f"{sandbox.url}/_sandbox/config", json={"encoding": "json"})
    cb = sandbox.receiver_url + "/json"
    await sandbox.call("Call/", {"from": "1", "to": "2", "answer_url": "https://a", "callback_url": cb})
    await wait_until(lambda: sandbox.receiver.on("/json"))
    got = sandbox.receiver.on("/json")[0]
    assert plivo_utils.validate_v3_signature(
        "POST",
        cb,
        got.headers["x-plivo-signature-v3-nonce"],
        TOKEN,
        got.headers["x-plivo-signature-v3"],
        json.loads(got.body),
    )
    # GET callbacks carry the payload in the query string.
    received: list[httpx.Request] = []

    async def capture(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    from tooling.sandbox import send_callback

    async with httpx.AsyncClient(transport=httpx.MockTransport(capture)) as mock:
        await send_callback(
            sandbox.state, mock, "https://gw.example.com/cb?k=v", "GET", {"api_id": "x"}, "v3"
        )
    request = received[0]
    assert urlsplit(str(request.url)).query == "k=v&api_id=x"
    assert plivo_utils.validate_v3_signature(
        "GET",
        str(request.url),
        request.headers["x-plivo-signature-v3-nonce"],
        TOKEN,
        request.headers["x-plivo-signature-v3"],
    )


async def test_message_uses_v2_and_sends_status_callbacks(sandbox: Sandbox) -> None:
    cb = sandbox.receiver_url + "/msg"
    status_url = sandbox.receiver_url + "/status"
    reply = await sandbox.call(
        "Message/", {"src": "1", "dst": "2<3", "text": "hi", "callback_url": cb, "url": status_url}
    )
    await wait_until(lambda: len(sandbox.receiver.on("/status")) == 6)
    result = sandbox.receiver.on("/msg")[0]
    assert plivo_utils.validate_signature(
        cb, result.headers["x-plivo-signature-v2-nonce"], result.headers["x-plivo-signature-v2"], TOKEN
    )
    uuids = _form(result)["message_uuid"]
    assert isinstance(uuids, list) and len(uuids) == 2
    statuses = [_form(r) for r in sandbox.receiver.on("/status")]
    assert {s["MessageUUID"] for s in statuses} == set(uuids)
    assert [s["Status"] for s in statuses[:3]] == ["queued", "sent", "delivered"]
    assert reply.json()["api_id"] == _form(result)["api_id"]


async def test_knobs_duplicates_callback_first_and_canned_replies(sandbox: Sandbox) -> None:
    config = {"duplicates": 2, "callback_first": True, "replies": [{"status": 429, "retry_after": 3}]}
    await sandbox.client.post(f"{sandbox.url}/_sandbox/config", json=config)
    body = {"from": "1", "to": "2", "answer_url": "https://a", "callback_url": sandbox.receiver_url + "/d"}
    limited = await sandbox.call("Call/", body)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    reply = await sandbox.call("Call/", body)
    # callback_first: the callbacks were sent (and answered) before this reply.
    assert len(sandbox.receiver.on("/d")) == 3
    assert reply.status_code == 200
    assert [c["status"] for c in sandbox.state.callbacks] == [200, 200, 200]
