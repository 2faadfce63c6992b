"""The receiver against an attacker: replayed signatures in other spellings, hostile bodies,
and signed callbacks of odd shapes (kept raw, never refused into oblivion)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.domain.signing import sign_v2
from tests.api.test_receiver import inbox_len, send, signed
from tests.conftest import Stack
from tests.support.receiver import wait_until

DEEP = b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
HUGE_INT = b'{"api_id":' + b"9" * 5_000 + b"}"
HOSTILE_JSON = {
    "deep": DEEP,
    "huge_int": HUGE_INT,
    "nan": b'{"api_id": NaN}',
    "infinity": b'{"api_id": -Infinity}',
    "overflow": b'{"api_id": 1e400}',
    "duplicate_keys": b'{"api_id": "a", "api_id": "b"}',
    "array": b'["api_id"]',
    "not_json": b"{nope",
}


@pytest.mark.parametrize(
    "respell",
    [
        lambda s: s + ",x",
        lambda s: "junk," + s,
        lambda s: s + ",,",
        lambda s: f"x, {s}",
        lambda s: f"{s},{s}",
    ],
    ids=["suffix", "prefix", "empty-parts", "spaces", "twice"],
)
async def test_a_seen_v3_signature_in_another_spelling_is_a_replay(
    stack_factory: Any, redis: Redis, respell: Any
) -> None:
    stack = await stack_factory(worker=False)
    args = signed(stack, {"api_id": "a1"}, nonce="777")
    assert (await send(stack, args)).status_code == 200
    again = {**args, "headers": {**args["headers"]}}
    again["headers"]["X-Plivo-Signature-V3"] = respell(args["headers"]["X-Plivo-Signature-V3"])
    replay = await send(stack, again)
    assert replay.status_code == 403, replay.text
    assert "nonce" in replay.json()["error"]
    assert await inbox_len(redis, stack) == 1


async def test_a_seen_v2_header_pair_cannot_carry_another_body(stack_factory: Any, redis: Redis) -> None:
    """V2 signs the URL and nonce only: the nonce is what stops a seen pair being reused."""
    stack = await stack_factory(worker=False)
    args = signed(stack, {"api_id": "a1"}, header="X-Plivo-Signature-V2", nonce="555")
    assert (await send(stack, args)).status_code == 200
    sig = args["headers"]["X-Plivo-Signature-V2"]
    for spelling in (sig + ",x", "junk," + sig, sig + ",,"):
        forged = {
            **args,
            "content": b"api_id=attacker&message=mine",
            "headers": {**args["headers"], "X-Plivo-Signature-V2": spelling},
        }
        response = await send(stack, forged)
        assert response.status_code == 403, (spelling, response.text)
    assert await inbox_len(redis, stack) == 1


async def test_v3_decides_when_both_versions_are_present(stack_factory: Any, redis: Redis) -> None:
    """A valid V2 pair next to junk V3 headers does not get a body in."""
    stack = await stack_factory(worker=False)
    v2 = signed(stack, {"api_id": "a1"}, header="X-Plivo-Signature-V2")
    v2["headers"]["X-Plivo-Signature-V3"] = "junk"
    v2["headers"]["X-Plivo-Signature-V3-Nonce"] = "1"
    assert (await send(stack, v2)).status_code == 403
    assert await inbox_len(redis, stack) == 0


async def test_v2_can_be_refused_outright(stack_factory: Any, redis: Redis) -> None:
    stack = await stack_factory(worker=False, GATEWAY_SIGNATURE_VERSIONS="v3")
    v2 = signed(stack, {"api_id": "a1"}, header="X-Plivo-Signature-V2")
    assert (await send(stack, v2)).status_code == 403
    v3 = signed(stack, {"api_id": "a1"})
    assert (await send(stack, v3)).status_code == 200
    entries = await redis.xrange(stack.settings.GATEWAY_KEY_PREFIX + "inbox")
    assert [json.loads(e[1]["e"])["sv"] for e in entries] == ["v3"]


async def test_the_stored_callback_records_the_version_that_verified_it(
    stack_factory: Any, redis: Redis
) -> None:
    stack = await stack_factory(worker=False)
    assert (await send(stack, signed(stack, {"api_id": "a1"}))).status_code == 200
    assert (
        await send(stack, signed(stack, {"api_id": "a2"}, header="X-Plivo-Signature-V2"))
    ).status_code == 200
    entries = await redis.xrange(stack.settings.GATEWAY_KEY_PREFIX + "inbox")
    assert [json.loads(e[1]["e"])["sv"] for e in entries] == ["v3", "v2"]


@pytest.mark.parametrize("name", sorted(HOSTILE_JSON))
async def test_unsigned_hostile_bodies_are_4xx_and_store_nothing(
    stack_factory: Any, redis: Redis, name: str
) -> None:
    stack = await stack_factory(worker=False)
    response = await stack.client.post(
        stack.gateway.url + "/callbacks/plivo",
        content=HOSTILE_JSON[name],
        headers={
            "Content-Type": "application/json",
            "X-Plivo-Signature-V3": "x",
            "X-Plivo-Signature-V3-Nonce": "1",
        },
    )
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"api_id", "error"}
    assert await inbox_len(redis, stack) == 0


def _v2_signed_raw(stack: Stack, body: bytes, content_type: str, nonce: str) -> dict[str, Any]:
    public = stack.settings.callback_url
    sig = sign_v2(public, nonce, stack.settings.PLIVO_AUTH_TOKEN.get_secret_value())
    return {
        "method": "POST",
        "url": stack.gateway.url + "/callbacks/plivo",
        "content": body,
        "headers": {
            "Content-Type": content_type,
            "X-Plivo-Signature-V2": sig,
            "X-Plivo-Signature-V2-Nonce": nonce,
        },
    }


async def test_signed_callbacks_of_odd_shapes_are_kept_and_surface_as_unmatched(
    stack_factory: Any, redis: Redis
) -> None:
    stack = await stack_factory()
    bodies = {**HOSTILE_JSON, "latin1": b"\xff\xfe{"}
    for i, (name, body) in enumerate(sorted(bodies.items())):
        content_type = "text/plain" if name == "latin1" else "application/json"
        response = await send(stack, _v2_signed_raw(stack, body, content_type, f"odd{i}"))
        assert response.status_code == 200, (name, response.text)
    # Plivo's retry of one of them (a fresh nonce) is a duplicate, not a second callback.
    again = await send(stack, _v2_signed_raw(stack, HOSTILE_JSON["nan"], "application/json", "retry"))
    assert again.status_code == 200

    async def listed() -> list[dict[str, Any]]:
        reply = await stack.client.get(
            stack.gateway.url + "/v1/callbacks/unmatched", params={"limit": 20}, headers=stack.auth
        )
        return list(reply.json()["objects"])

    await wait_until(lambda: _count(listed, len(bodies)), timeout=20)
    events = await listed()
    assert len(events) == len(bodies)
    assert all(e["type"] == "callback.unmatched" for e in events)
    by_error = {e["data"]["error"] for e in events}
    assert any("duplicate key" in err for err in by_error)
    assert any("deeper than" in err for err in by_error)
    assert any("NaN" in err for err in by_error)
    raw_b64 = [e for e in events if "raw_b64" in e["data"]]
    assert len(raw_b64) == 1
    assert any(e["data"].get("raw") == HOSTILE_JSON["nan"].decode() for e in events)


async def _count(listed: Any, expected: int) -> bool:
    return len(await listed()) >= expected


async def test_api_bodies_never_make_a_5xx(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False)
    for path in ("/v1/requests", "/v1/subscriptions"):
        for name, body in HOSTILE_JSON.items():
            response = await stack.client.post(
                stack.gateway.url + path,
                content=body,
                headers={"Content-Type": "application/json", **stack.auth},
            )
            assert response.status_code == 400, (path, name, response.text)
            assert set(response.json()) == {"api_id", "error"}
            assert response.json()["error"], (path, name)


async def test_wrong_types_are_400(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False)
    bad = [
        {"resource": 5},
        {"resource": "Call/", "params": []},
        {"resource": "Call/", "metadata": "x"},
        {"resource": "Call/", "timeout": "soon"},
        {"resource": "Call/", "timeout": 1.5},
        {"resource": "Call/", "targets": {"type": "webhook"}},
        {"resource": "Call/", "targets": [{"type": "queue", "queue": ["x"], "function": "f"}]},
        {"resource": "Call/", "status_events": "yes"},
    ]
    for body in bad:
        response = await stack.client.post(stack.gateway.url + "/v1/requests", json=body, headers=stack.auth)
        assert response.status_code == 400, (body, response.text)
    for body in ({"url": 5}, {"url": "https://example.com/h", "event_types": "x"}, {"url": None}):
        response = await stack.client.post(
            stack.gateway.url + "/v1/subscriptions", json=body, headers=stack.auth
        )
        assert response.status_code == 400, (body, response.text)
