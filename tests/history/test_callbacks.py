"""History's callbacks: every callback as it was received, one row per receipt, with its payload,
signature version, times and what became of it (matched, duplicate, late, unmatched ...)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.api.test_receiver import send, signed
from tests.conftest import Stack
from tests.history.test_archive import MESSAGE, archived, db, submit_message
from tests.support.receiver import wait_until

pytestmark = pytest.mark.history_writer_process


async def callback_rows(stack: Stack, where: str, *args: Any) -> list[dict[str, Any]]:
    conn = await db(stack)
    try:
        rows = await conn.fetch(f"SELECT * FROM callbacks WHERE {where} ORDER BY received_at, outcome", *args)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def test_every_receipt_is_a_row_duplicates_included(stack: Stack, redis: Redis) -> None:
    await stack.configure_sandbox(duplicates=2)  # the result callback arrives three times
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    # The two duplicates go through the inbox after the original: wait until they are logged.
    await wait_until(lambda: _rows_at_least(stack, api_id, 6))
    await wait_until(lambda: archived(stack, redis))
    rows = await callback_rows(stack, "api_id = $1", api_id)
    assert sorted(r["outcome"] for r in rows) == ["duplicate", "duplicate"] + ["matched"] * 4
    results = [r for r in rows if r["kind"] == "result"]
    assert len(results) == 3 and len({r["callback_id"] for r in results}) == 1  # one callback, 3 receipts
    assert len({r["received_at"] for r in results}) == 3
    statuses = [r for r in rows if r["kind"] != "result"]
    assert len(statuses) == 3 and {r["outcome"] for r in statuses} == {"matched"}
    for r in rows:
        assert r["signature_version"] == "v2"  # the sandbox signs Message/ callbacks with V2, as Plivo does
        assert r["received_at"] <= r["handled_at"]
        assert r["event_id"] == "evt_" + r["callback_id"]
        assert r["payload"] is not None and not r["early"]
    # The payload is the callback's parameters as received: the result names its request.
    assert all(api_id in r["payload"] for r in results)
    # The timeline shows each receipt, saying which were duplicates.
    timeline = (
        await stack.client.get(f"{stack.gateway.url}/v1/requests/{api_id}/timeline", headers=stack.auth)
    ).json()["timeline"]
    callbacks = [t for t in timeline if t["kind"] == "callback"]
    assert len(callbacks) == 6
    assert sum(t["duplicate"] for t in callbacks) == 2
    assert {t["signature_version"] for t in callbacks} == {"v2"}


async def _rows_at_least(stack: Stack, api_id: str, n: int) -> bool:
    return len(await callback_rows(stack, "api_id = $1", api_id)) >= n


async def test_a_callback_after_the_timeout_is_late(stack: Stack, redis: Redis) -> None:
    await stack.configure_sandbox(delay=2.5, status_callbacks=False)
    response = await stack.submit(
        {
            "resource": "Message/",
            "params": MESSAGE,
            "targets": [{"type": "webhook", "url": stack.hook_url()}],
            "timeout": 1,
        }
    )
    api_id = response.json()["api_id"]
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 2, timeout=15)  # timed_out, then completed
    await wait_until(lambda: _rows_at_least(stack, api_id, 1))
    (row,) = await callback_rows(stack, "api_id = $1", api_id)
    assert row["outcome"] == "late" and row["kind"] == "result"


async def test_an_unmatched_callback_is_a_row_of_no_request(stack_factory: Any, redis: Redis) -> None:
    stack: Stack = await stack_factory(GATEWAY_UNMATCHED_GRACE=1, WORKER_SWEEP_INTERVAL=0.1)
    orphan = {"api_id": "nobody-asked-for-this", "message": "call fired"}
    args = signed(stack, orphan)
    assert (await send(stack, args)).status_code == 200
    await asyncio.sleep(0.1)
    args_again = signed(stack, orphan)  # a fresh nonce: the same callback, sent again
    assert (await send(stack, args_again)).status_code == 200

    async def unmatched() -> list[dict[str, Any]]:
        return await callback_rows(stack, "api_id IS NULL AND payload->>'api_id' = $1", orphan["api_id"])

    await wait_until(lambda: _len_of(unmatched(), 1), timeout=10)
    (row,) = await unmatched()
    assert row["outcome"] == "unmatched" and row["signature_version"] == "v3"
    assert row["payload"] is not None
    # Its duplicate came while it was still waiting for its request (parked): it is logged only
    # once the original is known to be unmatched, and only if it came after that.
    await wait_until(lambda: archived(stack, redis))


async def _len_of(coro: Any, n: int) -> bool:
    return len(await coro) == n


async def test_erasing_a_request_erases_its_callbacks_payloads(stack: Stack, redis: Redis) -> None:
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: _rows_at_least(stack, api_id, 4))
    await wait_until(lambda: archived(stack, redis))
    erased = await stack.client.delete(f"{stack.gateway.url}/v1/requests/{api_id}", headers=stack.auth)
    assert erased.status_code == 204
    await wait_until(lambda: archived(stack, redis))
    rows = await callback_rows(stack, "api_id = $1", api_id)
    assert len(rows) == 4
    assert all(r["payload"] is None and r["erased_at"] is not None for r in rows)
    assert {r["outcome"] for r in rows} == {"matched"}  # the facts stay
