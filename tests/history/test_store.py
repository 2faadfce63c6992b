"""The history store on a real PostgreSQL: migrations under concurrency, idempotent batches,
partitions created ahead and dropped whole past the retention."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gateway.domain.history import AttemptRow, DeliveryRow, EventRow, RequestRow, Tree
from gateway.history import partitions
from gateway.history.migrate import migrate, migrations
from gateway.history.store import HistoryStore
from tooling.embedded_postgres import EmbeddedPostgres

pytestmark = pytest.mark.history_writer_process

DAY_MS = 86_400_000


@pytest.fixture
def schema_url(postgres_server: EmbeddedPostgres) -> str:
    return postgres_server.url() + "?search_path=h" + secrets.token_hex(4)


@pytest.fixture
async def history(schema_url: str) -> AsyncIterator[HistoryStore]:
    store = await HistoryStore.connect(schema_url, retention_s=7 * 86400)
    yield store
    await store.close()


def tree(api_id: str, at: int, *, status: str = "completed", attempts: int = 1) -> Tree:
    event = EventRow("evt_" + api_id, at, api_id, "request.completed", {"id": "evt_" + api_id, "n": 1})
    delivery = DeliveryRow(
        "dlv_" + api_id, at, event.event_id, api_id, event.type, None,
        {"type": "webhook", "url": "http://h/x"}, "succeeded", attempts, 0, at, {"id": "dlv_" + api_id},
    )  # fmt: skip
    return Tree(
        RequestRow(api_id, at, status, "Message/", "POST", at, {"k": 1}, {"api_id": api_id, "result": "r"}),
        [event],
        [delivery],
        [
            AttemptRow(
                delivery.delivery_id,
                0,
                n,
                at + n,
                event.event_id,
                api_id,
                "http://h/x",
                "success",
                200,
                1.5,
                None,
                "ok",
            )
            for n in range(1, attempts + 1)
        ],
        settled=True,
    )


async def test_processes_migrating_at_once_apply_each_migration_once(schema_url: str) -> None:
    conns = [await asyncpg.connect(schema_url) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        # Exactly one of them applied everything; the others waited for it and found nothing to do.
        assert sorted(len(a) for a in applied) == [0, 0, 0, len(migrations())]
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == [m.version for m in migrations()]
    finally:
        for c in conns:
            await c.close()


async def test_writing_a_batch_twice_changes_nothing(history: HistoryStore) -> None:
    now = int(time.time() * 1000)
    batch = [tree("a1", now, attempts=2), tree("a2", now)]
    assert await history.write(batch) == 2 * 4 + 1  # 2 requests, events, deliveries; 3 attempts
    async with history.pool.acquire() as conn:
        before = [await conn.fetch(f"SELECT * FROM {t} ORDER BY 1") for t in partitions.TABLES]
    await history.write(batch)
    async with history.pool.acquire() as conn:
        after = [await conn.fetch(f"SELECT * FROM {t} ORDER BY 1") for t in partitions.TABLES]

    def plain(tables: list[list[asyncpg.Record]]) -> list[list[dict[str, object]]]:
        return [[{k: v for k, v in r.items() if k != "archived_at"} for r in rows] for rows in tables]

    assert plain(before) == plain(after)


async def test_a_later_copy_without_the_result_keeps_the_stored_one(history: HistoryStore) -> None:
    now = int(time.time() * 1000)
    await history.write([tree("a1", now)])
    thinner = tree("a1", now)
    assert thinner.request is not None
    thinner.request.record = {"api_id": "a1", "status": "completed", "archived": "1"}
    await history.write([thinner])
    got = await history.get_tree("a1")
    assert got is not None and got.request is not None
    assert got.request.record["result"] == "r" and got.request.record["archived"] == "1"


async def test_partitions_are_made_for_the_rows_and_dropped_whole_past_retention(
    history: HistoryStore,
) -> None:
    now = int(time.time() * 1000)
    old, recent = now - 9 * DAY_MS, now - 2 * DAY_MS
    await history.write([tree("old", old), tree("recent", recent), tree("today", now)])
    async with history.pool.acquire() as conn:
        names = {
            r["relname"]
            for r in await conn.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'events_p%'")
        }
    assert {partitions.partition_name("events", partitions.day_of(t)) for t in (old, recent, now)} <= names
    dropped = await history.maintain(now)  # retention: 7 days
    assert sorted(dropped) == sorted(
        partitions.partition_name(t, partitions.day_of(old)) for t in partitions.TABLES
    )
    assert await history.get_tree("old") is None
    kept = await history.get_tree("recent")
    assert kept is not None and len(kept.attempts) == 1
    # Tomorrow's partitions exist before the first row needs them.
    async with history.pool.acquire() as conn:
        tomorrow = partitions.partition_name("attempts", partitions.day_of(now + DAY_MS))
        assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", tomorrow)
