"""Fault injection on the real stack (subprocesses on loopback): nothing acknowledged is lost.

Fast variants run by default; `pytest --long` runs them at the sizes of docs/reliability.md.
Each test prints its figures (`pytest -s tests/reliability`).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from tests.reliability.conftest import Rig
from tests.reliability.harness import (
    API_KEY,
    Sender,
    ledger,
    report,
    seed_requests,
)
from tests.support.receiver import WebhookReceiver, wait_until
from tests.support.servers import ServerThread


def scale(request: pytest.FixtureRequest, fast: int, long: int) -> int:
    return long if request.config.getoption("--long") else fast


def check_nothing_lost(rig: Rig, ids: list[str], sender: Sender) -> dict[str, Any]:
    seen = ledger(rig.receiver.received)
    acked_lost = [a for a in sender.acked if a not in seen["per_api"]]
    assert acked_lost == [], f"{len(acked_lost)} acknowledged callbacks never delivered"
    assert set(sender.acked) == set(ids)
    # One event per callback: redeliveries carry the same webhook-id, never a new one.
    assert all(len(events) == 1 for events in seen["per_api"].values())
    return seen


async def test_worker_killed_mid_delivery(rig: Rig, request: pytest.FixtureRequest) -> None:
    count = scale(request, 2000, 20000)
    ids = await seed_requests(rig.redis.url, rig.prefix, count, rig.hook)
    await rig.gateway(rig.public_port)  # type: ignore[attr-defined]
    first = rig.worker()
    sender = Sender(rig.public_url, [rig.public_url])
    sending = asyncio.create_task(sender.send_all(ids))
    await wait_until(lambda: rig.delivered() >= count // 4, timeout=60)
    first.kill()  # SIGKILL: no chance to finish anything in flight
    killed_at = rig.delivered()
    rig.worker()
    await rig.all_sent(sending, sender, ids)
    await rig.all_delivered(ids)
    seen = check_nothing_lost(rig, ids, sender)
    report(
        "worker killed",
        callbacks=count,
        delivered_before_kill=killed_at,
        delivered=seen["distinct"],
        lost=0,
        redelivered_same_id=seen["redelivered"],
    )


async def test_gateway_killed_while_callbacks_stream_in(rig: Rig, request: pytest.FixtureRequest) -> None:
    count = scale(request, 2000, 20000)
    ids = await seed_requests(rig.redis.url, rig.prefix, count, rig.hook)
    doomed = await rig.gateway(rig.public_port)  # type: ignore[attr-defined]
    survivor = await rig.gateway()
    rig.worker()
    urls = [rig.public_url, f"http://127.0.0.1:{survivor.port}"]
    sender = Sender(rig.public_url, urls)
    sending = asyncio.create_task(sender.send_all(ids))
    await wait_until(lambda: len(sender.acked) >= count // 4, timeout=60)
    doomed.kill()
    await rig.all_sent(sending, sender, ids)
    await rig.all_delivered(ids)
    seen = check_nothing_lost(rig, ids, sender)
    report(
        "gateway killed",
        callbacks=count,
        sender_attempts=sender.attempts,
        sender_failures=dict(sender.failures),
        delivered=seen["distinct"],
        lost=0,
        redelivered_same_id=seen["redelivered"],
    )
    assert sum(sender.failures.values()) > 0  # the kill really cost some attempts


@pytest.mark.parametrize("rig", ["always", "everysec"], indirect=True)
async def test_redis_restart(rig: Rig, request: pytest.FixtureRequest) -> None:
    """SIGKILL of the Redis process, with either fsync policy. A process crash loses nothing even
    with ``everysec`` (the writes are in the kernel's page cache); only a host crash can lose up
    to about a second with ``everysec``, which no test on one machine can inject."""
    count = scale(request, 1000, 10000)
    ids = await seed_requests(rig.redis.url, rig.prefix, count, rig.hook)
    await rig.gateway(rig.public_port)  # type: ignore[attr-defined]
    rig.worker()
    sender = Sender(rig.public_url, [rig.public_url])
    sending = asyncio.create_task(sender.send_all(ids))
    await wait_until(lambda: len(sender.acked) >= count // 3, timeout=60)
    rig.redis.kill()  # SIGKILL: only what the AOF holds survives
    async with httpx.AsyncClient() as client:
        ready = await client.get(rig.public_url + "/readyz")
    await asyncio.sleep(1.0)
    rig.redis.start()  # same port, same directory: replays the AOF
    await rig.all_sent(sending, sender, ids)
    await rig.all_delivered(ids)
    seen = check_nothing_lost(rig, ids, sender)
    assert ready.status_code == 503
    assert sender.failures["503"] + sum(v for k, v in sender.failures.items() if not k.isdigit()) > 0
    report(
        f"redis restart (appendfsync {request.node.callspec.params['rig']})",
        callbacks=count,
        sender_failures=dict(sender.failures),
        delivered=seen["distinct"],
        lost=0,
        redelivered_same_id=seen["redelivered"],
    )


async def test_postgres_outage_during_load(rig: Rig, request: pytest.FixtureRequest) -> None:
    """PostgreSQL stopped while callbacks stream in, then started again: ingest and delivery go on
    without it, history waits in the backlog, and every request reaches PostgreSQL afterwards."""
    count = scale(request, 1000, 10000)
    ids = await seed_requests(rig.redis.url, rig.prefix, count, rig.hook)
    await rig.gateway(rig.public_port)  # type: ignore[attr-defined]
    rig.worker()
    sender = Sender(rig.public_url, [rig.public_url])
    sending = asyncio.create_task(sender.send_all(ids))
    await wait_until(lambda: len(sender.acked) >= count // 4, timeout=60)
    rig.postgres.stop()
    redis = Redis.from_url(rig.redis.url, decode_responses=True)
    try:
        peak, stopped_at = 0, time.monotonic()
        while time.monotonic() - stopped_at < 3:  # down for 3 s while the load goes on
            peak = max(peak, int(await redis.zcard(rig.prefix + "archive")))
            await asyncio.sleep(0.1)
        delivered_while_down = len(rig.receiver.received)
        async with httpx.AsyncClient() as client:
            ready = (await client.get(rig.public_url + "/readyz")).json()
        rig.postgres.start()  # same port, same data directory
        restarted = time.monotonic()
        await rig.all_sent(sending, sender, ids)
        await rig.all_delivered(ids)
        seen = check_nothing_lost(rig, ids, sender)

        async def drained() -> bool:
            return int(await redis.zcard(rig.prefix + "archive")) == 0

        await wait_until(drained, timeout=120)
        drain_s = time.monotonic() - restarted
    finally:
        await redis.aclose()
    conn = await asyncpg.connect(rig.postgres.url())
    try:
        requests = await conn.fetchval("SELECT count(*) FROM requests WHERE api_id = ANY($1)", ids)
        completed = await conn.fetchval(
            "SELECT count(*) FROM requests WHERE api_id = ANY($1) AND status = 'completed'", ids
        )
        attempts = await conn.fetchval(
            "SELECT count(DISTINCT api_id) FROM attempts WHERE api_id = ANY($1)", ids
        )
    finally:
        await conn.close()
    assert ready["history"] == "down" and ready["status"] == "ready"  # below the bound: still serving
    assert peak > 0 and delivered_while_down > 0
    assert requests == completed == attempts == count
    report(
        "postgres outage (3 s) during load",
        callbacks=count,
        backlog_peak=peak,
        delivered_before_restart=delivered_while_down,
        drained_after_s=round(drain_s, 1),
        in_postgres=requests,
        delivered=seen["distinct"],
        lost=0,
    )


async def test_subscriber_outage_then_replay_of_dead_letters(
    rig: Rig, request: pytest.FixtureRequest
) -> None:
    count = scale(request, 300, 3000)
    ids = await seed_requests(rig.redis.url, rig.prefix, count, rig.hook)
    gateway = await rig.gateway(rig.public_port, GATEWAY_RETRY_SCHEDULE="0,0.3,0.6")  # type: ignore[attr-defined]
    rig.worker(GATEWAY_RETRY_SCHEDULE="0,0.3,0.6")
    rig.receiver.statuses = [503] * (count * 3)  # down: every attempt of every delivery fails
    sender = Sender(rig.public_url, [rig.public_url])
    await sender.send_all(ids)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    base = f"http://127.0.0.1:{gateway.port}"
    async with httpx.AsyncClient(timeout=10) as client:

        async def dead() -> int:
            page = await client.get(
                base + "/v1/deliveries", params={"status": "failed", "limit": 1}, headers=auth
            )
            return int(page.json()["meta"]["total_count"])

        await wait_until(lambda: _ge(dead(), count), timeout=60)
        rig.receiver.statuses = []  # back up
        replayed = 0
        for event_id in await _failed_event_ids(client, base, auth):
            response = await client.post(f"{base}/v1/events/{event_id}/replay", headers=auth)
            while response.status_code == 429:  # the API key's rate limit: as told, wait and resend
                await asyncio.sleep(float(response.headers["retry-after"]))
                response = await client.post(f"{base}/v1/events/{event_id}/replay", headers=auth)
            assert response.status_code == 202, response.text
            replayed += 1
    await wait_until(lambda: rig.delivered() == count, timeout=60)
    check_nothing_lost(rig, ids, sender)
    report("subscriber outage", callbacks=count, dead_lettered=count, replayed=replayed, lost=0)


async def test_slow_subscriber_does_not_hold_up_the_others(rig: Rig, request: pytest.FixtureRequest) -> None:
    count = scale(request, 300, 3000)
    slow = WebhookReceiver(hang=30)  # accepts the connection, never answers in time
    slow_server = ServerThread(slow.app()).start()
    try:
        ids = await seed_requests(rig.redis.url, rig.prefix, count, rig.hook)
        gateway = await rig.gateway(rig.public_port)  # type: ignore[attr-defined]
        # Few slots, a long attempt timeout: without the per-subscription concurrency cap the
        # hanging endpoint would hold every slot.
        # (No rate limit in the way: the default of 50/s per subscription would be the figure.)
        rig.worker(
            WORKER_CONCURRENCY="8",
            GATEWAY_DELIVERY_TIMEOUT="5",
            GATEWAY_SUBSCRIPTION_CONCURRENCY="2",
            GATEWAY_SUBSCRIPTION_RATE="100000",
            GATEWAY_SUBSCRIPTION_BURST="100000",
        )
        base = f"http://127.0.0.1:{gateway.port}"
        auth = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(timeout=10) as client:
            for url in (slow_server.url + "/slow", rig.receiver_server.url + "/fast"):
                body = {"url": url, "event_types": ["request.completed"]}
                created = await client.post(base + "/v1/subscriptions", json=body, headers=auth)
                assert created.status_code == 201, created.text
        sender = Sender(rig.public_url, [rig.public_url])
        sent_at: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        for chunk in range(0, count, 50):  # a steady stream rather than one burst
            batch = ids[chunk : chunk + 50]
            for api_id in batch:
                sent_at[api_id] = loop.time()
            await sender.send_all(batch)
            await asyncio.sleep(0.05)
        # Blocked behind the hanging endpoint, 8 slots at 5 s each would need count * 5 / 8 s.
        await wait_until(lambda: len(rig.receiver.on("/fast")) >= count, timeout=count * 5 / 8 / 4)
    finally:
        slow_server.stop()
    import json as _json
    import time as _time

    offset = _time.time() - loop.time()
    lags = sorted(r.at - offset - sent_at[_json.loads(r.body)["api_id"]] for r in rig.receiver.on("/fast"))
    p50, p99 = lags[len(lags) // 2], lags[int(len(lags) * 0.99) - 1]
    report(
        "slow subscriber",
        callbacks=count,
        fast_p50_ms=round(p50 * 1000),
        fast_p99_ms=round(p99 * 1000),
        slow_attempts=len(slow.received),
    )
    # A hanging endpoint costs an attempt its full timeout (5 s here): the typical delivery to
    # the healthy subscription never waited behind one.
    assert p50 < 5.0, p50


async def _ge(coro: Any, value: int) -> bool:
    return bool(await coro >= value)


async def _failed_event_ids(client: httpx.AsyncClient, base: str, auth: dict[str, str]) -> list[str]:
    ids: list[str] = []
    offset = 0
    while True:
        page = (
            await client.get(
                base + "/v1/deliveries",
                params={"status": "failed", "limit": 20, "offset": offset},
                headers=auth,
            )
        ).json()
        ids += [d["event_id"] for d in page["objects"]]
        if not page["meta"]["next"]:
            return ids
        offset += 20


if os.environ.get("CG_RELIABILITY_DEBUG"):  # pragma: no cover - local debugging aid
    pytest.register_assert_rewrite("tests.reliability.harness")
