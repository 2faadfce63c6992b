"""Per-API-key rate limits: shared by every gateway process, Plivo-shaped 429s, receiver exempt."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api.test_receiver import send, signed
from tests.conftest import Stack

KEY_A = "key-a-1234567890abcdef"
KEY_B = "key-b-1234567890abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_limit_is_shared_by_all_processes_and_per_key(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(
        worker=False,
        GATEWAY_API_KEYS=f"{KEY_A},{KEY_B}",
        GATEWAY_API_RATE_LIMIT=5,
        GATEWAY_API_RATE_WINDOW=3,
    )
    second = stack.add_gateway()
    urls = [stack.gateway.url, second.url] * 8
    answers = await asyncio.gather(
        *(stack.client.get(url + "/v1/requests", headers=bearer(KEY_A)) for url in urls)
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [429] * 11  # atomic across both processes: exactly the limit
    refused = next(a for a in answers if a.status_code == 429)
    body = refused.json()
    assert set(body) == {"api_id", "error"} and "rate limit" in body["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 3
    # Another key has its own window.
    other = await stack.client.get(second.url + "/v1/requests", headers=bearer(KEY_B))
    assert other.status_code == 200
    # The receiver is never counted: Plivo's callbacks get through while the key is limited.
    for n in range(12):
        callback = signed(stack, {"api_id": f"cb-{n}", "message": "call fired"})
        assert (await send(stack, callback)).status_code == 200
    await asyncio.sleep(int(refused.headers["retry-after"]) + 0.2)
    again = await stack.client.get(stack.gateway.url + "/v1/requests", headers=bearer(KEY_A))
    assert again.status_code == 200


async def test_zero_turns_the_limit_off(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_API_RATE_LIMIT=0)
    answers = await asyncio.gather(
        *(stack.client.get(stack.gateway.url + "/v1/requests", headers=stack.auth) for _ in range(30))
    )
    assert {a.status_code for a in answers} == {200}
