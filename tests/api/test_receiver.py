"""The callback receiver: signatures, encodings, bad input, duplicates, ordering, durability."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from redis.asyncio import Redis

from gateway.domain.signing import sign_v2, sign_v3
from tests.conftest import Stack
from tests.support.receiver import wait_until
from tooling.embedded_redis import EmbeddedRedis

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


def signed(
    stack: Stack,
    params: dict[str, Any],
    *,
    query: str = "",
    method: str = "POST",
    encoding: str = "form",
    token: str | None = None,
    header: str = "X-Plivo-Signature-V3",
    nonce: str | None = None,
) -> dict[str, Any]:
    """Arguments for httpx to send ``params`` as Plivo would, signed for the public URL."""
    token = token or stack.settings.PLIVO_AUTH_TOKEN.get_secret_value()
    public = stack.settings.callback_url + (f"?{query}" if query else "")
    local = stack.gateway.url + "/callbacks/plivo" + (f"?{query}" if query else "")
    nonce = nonce or str(secrets.randbelow(10**20))  # Plivo signs every attempt afresh
    # One nonce header per version, shared by the account and main-account (-Ma-) signatures.
    nonce_header = "X-Plivo-Signature-V2-Nonce" if header.endswith("V2") else "X-Plivo-Signature-V3-Nonce"
    if method == "GET":
        sep = "&" if query else "?"
        public += sep + urlencode(params, doseq=True)
        local += sep + urlencode(params, doseq=True)
        sig = sign_v3("GET", public, None, nonce, token)
        return {"method": "GET", "url": local, "headers": {header: sig, nonce_header: nonce}}
    if header.endswith("V2"):
        sig = sign_v2(public, nonce, token)
    else:
        sig = sign_v3("POST", public, params, nonce, token)
    headers = {header: sig, nonce_header: nonce}
    if encoding == "json":
        return {"method": "POST", "url": local, "json": params, "headers": headers}
    return {
        "method": "POST",
        "url": local,
        "content": urlencode(params, doseq=True).encode(),
        "headers": {**headers, "Content-Type": "application/x-www-form-urlencoded"},
    }


async def send(stack: Stack, args: dict[str, Any]) -> httpx.Response:
    return await stack.client.request(**args)


async def inbox_len(redis: Redis, stack: Stack) -> int:
    """Callbacks stored in the inbox (not counting the duplicates logged for history)."""
    entries = await redis.xrange(stack.settings.GATEWAY_KEY_PREFIX + "inbox")
    return sum(1 for _, fields in entries if "dup" not in fields)


async def duplicates_len(redis: Redis, stack: Stack) -> int:
    """Duplicates in the inbox, marked ``dup`` (lua/ingest.lua): only logged, never handled again."""
    entries = await redis.xrange(stack.settings.GATEWAY_KEY_PREFIX + "inbox")
    return sum(1 for _, fields in entries if fields.get("dup") == "1")


async def test_missing_and_forged_signatures_are_403(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False)
    params = {"api_id": "a1", "message": "call fired"}
    unsigned = await stack.client.post(stack.gateway.url + "/callbacks/plivo", data=params)
    assert unsigned.status_code == 403
    assert set(unsigned.json()) == {"api_id", "error"}
    forged = signed(stack, params, token="not-the-token")
    assert (await send(stack, forged)).status_code == 403
    tampered = signed(stack, params)
    tampered["content"] = urlencode({**params, "message": "other"}).encode()
    assert (await send(stack, tampered)).status_code == 403
    # Signed for another host: the public URL comes from configuration, not the Host header.
    other = signed(stack, params)
    other["headers"]["Host"] = "evil.example.com"
    assert (await send(stack, other)).status_code == 200
    assert await inbox_len(redis, stack) == 1


@pytest.mark.parametrize(
    ("encoding", "method", "header"),
    [
        ("form", "POST", "X-Plivo-Signature-V3"),
        ("json", "POST", "X-Plivo-Signature-V3"),
        ("form", "GET", "X-Plivo-Signature-V3"),
        ("form", "POST", "X-Plivo-Signature-V2"),
    ],
)
async def test_encodings_are_accepted_and_stored(
    stack_factory: Any, redis: Redis, encoding: str, method: str, header: str
) -> None:
    stack = await stack_factory(worker=False)
    params = {"api_id": "a1", "Text": "héllo wörld ✓", "Tag": ["b", "a"]}
    if encoding == "json":
        params["Nested"] = {"k": 1}  # type: ignore[assignment]
    args = signed(stack, params, query="cg_ref=r1&x=", method=method, encoding=encoding, header=header)
    response = await send(stack, args)
    assert response.status_code == 200, response.text
    entries = await redis.xrange(stack.settings.GATEWAY_KEY_PREFIX + "inbox")
    stored = json.loads(entries[0][1]["e"])
    assert stored["p"]["Text"] == "héllo wörld ✓"
    assert sorted(stored["p"]["Tag"]) == ["a", "b"]
    assert stored["enc"] == {"POST": encoding, "GET": "query"}[method]


async def test_main_account_signature(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False, PLIVO_MAIN_AUTH_TOKEN="main-account-token-123")
    params = {"api_id": "a2"}
    ma = signed(stack, params, token="main-account-token-123", header="X-Plivo-Signature-Ma-V3")
    assert (await send(stack, ma)).status_code == 200
    # The main token does not validate the subaccount header, nor the other way round.
    wrong = signed(stack, params, token="main-account-token-123", header="X-Plivo-Signature-V3")
    assert (await send(stack, wrong)).status_code == 403


async def test_replayed_nonce_is_refused(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False)
    args = signed(stack, {"api_id": "a5"}, nonce="424242")
    assert (await send(stack, args)).status_code == 200
    replay = await send(stack, args)
    assert replay.status_code == 403
    assert "nonce" in replay.json()["error"]
    # A fresh signature for the same payload is Plivo retrying: a duplicate, acknowledged.
    assert (await send(stack, signed(stack, {"api_id": "a5"}))).status_code == 200
    assert await inbox_len(redis, stack) == 1
    assert await duplicates_len(redis, stack) == 1  # the retry, logged; the refused replay is not


async def test_verification_can_be_switched_off_explicitly(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False, GATEWAY_VERIFY_SIGNATURES=False)
    response = await stack.client.post(stack.gateway.url + "/callbacks/plivo", data={"api_id": "x"})
    assert response.status_code == 200
    assert await inbox_len(redis, stack) == 1


async def test_bad_input_is_rejected_and_stores_nothing(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False, GATEWAY_MAX_BODY_BYTES=1024)
    url = stack.gateway.url + "/callbacks/plivo"
    big = await stack.client.post(
        url, content=b"a=" + b"x" * 4096, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert big.status_code == 413
    xml = await stack.client.post(url, content=b"<a/>", headers={"Content-Type": "text/xml"})
    assert xml.status_code == 415
    broken = await stack.client.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    latin = await stack.client.post(
        url, content=b"a=\xff\xfe", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert latin.status_code == 400
    for response in (big, xml, broken, latin):
        assert set(response.json()) == {"api_id", "error"}
    assert await inbox_len(redis, stack) == 0


async def test_duplicates_make_one_event_and_one_delivery(stack: Stack, redis: Redis) -> None:
    # Plivo's retries (sequential, with fresh nonces) and concurrent copies.
    await stack.configure_sandbox(duplicates=3)
    response = await stack.submit(
        {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    )
    api_id = response.json()["api_id"]
    await wait_until(lambda: len(stack.sandbox_state.callbacks) == 4)
    result = stack.sandbox_state.callbacks[0]["payload"]
    copies = [
        signed(
            stack, result, query=stack.sandbox_state.requests[0]["params"]["callback_url"].split("?", 1)[1]
        )
        for _ in range(4)
    ]
    answers = await asyncio.gather(*(send(stack, c) for c in copies))
    assert [a.status_code for a in answers] == [200] * 4
    assert all(c["status"] == 200 for c in stack.sandbox_state.callbacks)
    await wait_until(lambda: stack.receiver.on("/hook"))
    await asyncio.sleep(0.5)
    assert len(stack.receiver.on("/hook")) == 1
    assert len((await stack.status(api_id))["events"]) == 1


@pytest.mark.parametrize("callback_first", [True, False])
async def test_callback_before_or_after_submit_completes_once(stack: Stack, callback_first: bool) -> None:
    await stack.configure_sandbox(callback_first=callback_first, delay=0)
    response = await stack.submit(
        {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    )
    assert response.status_code == 202
    api_id = response.json()["api_id"]
    if callback_first:  # the callback was stored before the submit returned
        assert stack.sandbox_state.callbacks[0]["status"] == 200
    await wait_until(lambda: stack.receiver.on("/hook"))
    await asyncio.sleep(0.3)
    assert len(stack.receiver.on("/hook")) == 1
    status = await stack.status(api_id)
    assert status["status"] == "completed"
    assert len(status["events"]) == 1


async def test_callback_while_the_worker_is_down_is_delivered_later(
    stack_factory: Any,
) -> None:
    stack = await stack_factory(worker=False)
    response = await stack.submit(
        {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": stack.hook_url()}]}
    )
    await wait_until(lambda: stack.sandbox_state.callbacks)
    assert stack.sandbox_state.callbacks[0]["status"] == 200
    assert (await stack.status(response.json()["api_id"]))["status"] == "pending"
    stack.start_worker()
    await wait_until(lambda: stack.receiver.on("/hook"))
    assert (await stack.status(response.json()["api_id"]))["status"] == "completed"


async def test_redis_down_means_503_and_nothing_half_written(stack_factory: Any) -> None:
    own = EmbeddedRedis().start()
    try:
        stack = await stack_factory(worker=False, REDIS_URL=own.url)
        params = {"api_id": "a3"}
        assert (await send(stack, signed(stack, params))).status_code == 200
        own.kill()
        down = await send(stack, signed(stack, {"api_id": "a4"}))
        assert down.status_code == 503
        assert set(down.json()) == {"api_id", "error"}
        own.start()  # same port, empty (no persistence in this test): the API recovers by itself
        again = await send(stack, signed(stack, {"api_id": "a4"}))
        assert again.status_code == 200
    finally:
        own.cleanup()


async def test_a_callback_answered_503_for_missing_replicas_can_come_back_as_it_was(
    stack_factory: Any, redis: Redis
) -> None:
    # REDIS_WAIT_REPLICAS=1 on a Redis without replicas: not durable enough, 503. The same signed
    # request sent again (a proxy's retry: same nonce) must be neither a duplicate nor a replay.
    stack = await stack_factory(worker=False, REDIS_WAIT_REPLICAS=1, REDIS_WAIT_TIMEOUT=0.05)
    request = signed(stack, {"api_id": "w1"}, nonce="12345678901234567890")
    for _ in range(2):
        answer = await send(stack, request)
        assert answer.status_code == 503, answer.text
    prefix = stack.settings.GATEWAY_KEY_PREFIX
    assert await redis.keys(f"{prefix}dedup:*") == [] and await redis.keys(f"{prefix}nonce:*") == []
