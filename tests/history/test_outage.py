"""PostgreSQL down: ingest and delivery go on, history waits in the backlog (bounded: 503 at the
bound, Plivo retries), and everything is copied once PostgreSQL is back."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from tests.api.test_receiver import signed
from tests.conftest import Stack
from tests.history.test_archive import MESSAGE, archived
from tests.support.receiver import wait_until
from tooling.embedded_postgres import EmbeddedPostgres

pytestmark = pytest.mark.history_writer_process


async def test_an_outage_fills_the_backlog_to_its_bound_then_drains_losing_nothing(
    stack_factory: Any, redis: Redis
) -> None:
    postgres = EmbeddedPostgres()  # not started yet: PostgreSQL is down from the start
    stack: Stack = await stack_factory(
        DATABASE_URL=postgres.url() + "?search_path=outage", GATEWAY_HISTORY_BACKLOG_MAX=3
    )
    body = {
        "resource": "Message/",
        "params": MESSAGE,
        "targets": [{"type": "webhook", "url": stack.hook_url()}],
    }
    try:
        accepted = []
        for _ in range(3):
            response = await stack.submit(body)
            assert response.status_code == 202, response.text
            accepted.append(response.json()["api_id"])
        # Delivery does not wait for PostgreSQL: every result reaches its webhook.
        await wait_until(lambda: len(stack.receiver.on("/hook")) == 3)

        async def refused() -> bool:
            return (await stack.submit(body)).status_code == 503

        await wait_until(refused, timeout=5)
        refusal = await stack.submit(body)
        assert refusal.status_code == 503 and "history backlog full" in refusal.json()["error"]
        ready = await stack.client.get(stack.gateway.url + "/readyz")
        assert ready.status_code == 503
        detail = ready.json()
        assert detail["history"] == "down" and detail["history_backlog"] >= 3
        assert detail["history_backlog_max"] == 3 and detail["history_error"]
        # The receiver refuses too (Plivo retries), with nothing stored.
        inbox = await redis.xlen(stack.settings.GATEWAY_KEY_PREFIX + "inbox")
        callback = await stack.client.request(**signed(stack, {"api_id": "late-1", "Status": "x"}))
        assert callback.status_code == 503 and "history backlog full" in callback.json()["error"]
        assert await redis.xlen(stack.settings.GATEWAY_KEY_PREFIX + "inbox") == inbox

        postgres.start()
        await wait_until(lambda: archived(stack, redis), timeout=30)

        async def accepted_again() -> bool:
            return (await stack.submit(body)).status_code == 202

        await wait_until(accepted_again, timeout=5)
        conn = await asyncpg.connect(postgres.url() + "?search_path=outage")
        try:
            rows = await conn.fetch("SELECT api_id, status FROM requests WHERE api_id = ANY($1)", accepted)
            assert {r["api_id"] for r in rows} == set(accepted)
            assert {r["status"] for r in rows} == {"completed"}
            events = await conn.fetchval("SELECT count(*) FROM events WHERE api_id = ANY($1)", accepted)
            attempts = await conn.fetchval("SELECT count(*) FROM attempts WHERE api_id = ANY($1)", accepted)
            assert events == 3 and attempts == 3
        finally:
            await conn.close()
    finally:
        postgres.cleanup()
