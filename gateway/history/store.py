"""The history store: PostgreSQL through an asyncpg pool.

Writes are idempotent upserts of whole trees (``gateway.domain.history.Tree``) in one transaction a
batch: replaying a batch after a crash writes the same rows again. Reads serve what Redis no longer
holds: a request with its events and attempts, and its timeline.

asyncpg, not psycopg 3: measured with both on the same embedded PostgreSQL (500-row upsert batches,
docs/performance.md), the database took the same time but the client spent 4.6-4.9 µs of CPU a
row against psycopg's 15.7-21.9 µs, and the writer shares its process with the delivery worker.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import asyncpg

from gateway.domain.deliveries import AttemptLog, DeliveryRecord
from gateway.domain.events import EventJson
from gateway.domain.history import Tree, callback_key
from gateway.history import partitions, rows
from gateway.history.migrate import migrate
from gateway.history.rows import (
    MAX_ROWS,
    at_ms,
    attempt_args,
    callback_args,
    delivery_args,
    event_args,
    iso,
    request_args,
    storable,
    ts,
)

if TYPE_CHECKING:
    from gateway.history.migrate import Conn


COUNT_EXACT_MAX = 10_000  # list totals above this many rows are the planner's estimate

# Each upsert takes a whole batch as one array per column (``unnest``): one statement, one plan and
# one round trip per table a batch, where executemany planned and executed every row (PostgreSQL's
# CPU over one e2e bench run: 4.6 s with executemany, 1.5 s with unnest, sampled from /proc).
_UPSERT_REQUEST = """
INSERT INTO requests (api_id, submitted_at, status, resource, method, finished_at, metadata, record,
    erased_at)
SELECT a, s, st, res, m, f, md::jsonb, r::jsonb, z
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
    $7::text[], $8::text[], $9::timestamptz[]) AS t(a, s, st, res, m, f, md, r, z)
ON CONFLICT (api_id, submitted_at) DO UPDATE SET status = excluded.status,
    finished_at = excluded.finished_at, metadata = excluded.metadata,
    record = CASE WHEN excluded.erased_at IS NULL THEN requests.record || excluded.record
                  ELSE excluded.record END,
    erased_at = excluded.erased_at, archived_at = now()
WHERE requests.erased_at IS NULL"""

_UPSERT_EVENT = """
INSERT INTO events (event_id, created_at, api_id, type, body)
SELECT e, c, a, ty, b::jsonb
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[]) AS t(e, c, a, ty, b)
ON CONFLICT (event_id, created_at) DO NOTHING"""

_UPSERT_DELIVERY = """
INSERT INTO deliveries (delivery_id, created_at, event_id, api_id, event_type, subscription_id, target,
    status, attempts, cycle, updated_at, record)
SELECT d, c, e, a, ty, sub, tg::jsonb, st, n, cy, u, r::jsonb
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::int4[], $10::int4[], $11::timestamptz[], $12::text[])
    AS t(d, c, e, a, ty, sub, tg, st, n, cy, u, r)
ON CONFLICT (delivery_id, created_at) DO UPDATE SET status = excluded.status,
    attempts = excluded.attempts, cycle = excluded.cycle, updated_at = excluded.updated_at,
    record = excluded.record
WHERE deliveries.updated_at <= excluded.updated_at"""

_UPSERT_ATTEMPT = """
INSERT INTO attempts (delivery_id, cycle, attempt, at, event_id, api_id, target, outcome, status_code,
    duration_ms, error, response)
SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[], $4::timestamptz[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::int4[], $10::float8[], $11::text[], $12::text[])
ON CONFLICT (delivery_id, cycle, attempt, at) DO NOTHING"""

# A callback's row is written once; only a payload missing from an earlier copy (which read the
# callback's log line before its event was stored) is filled in later.
_UPSERT_CALLBACK = """
INSERT INTO callbacks (callback_id, received_at, api_id, event_id, handled_at, kind, outcome,
    signature_version, early, payload)
SELECT c, r, a, e, h, k, o, sv, ea, pl::jsonb
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
    $7::text[], $8::text[], $9::bool[], $10::text[]) AS t(c, r, a, e, h, k, o, sv, ea, pl)
ON CONFLICT (callback_id, received_at) DO UPDATE SET payload = excluded.payload
WHERE callbacks.payload IS NULL AND callbacks.erased_at IS NULL AND excluded.payload IS NOT NULL"""


def _columns(rows: dict[Any, tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows (one per key: a key twice in one upsert is an error in PostgreSQL) as column arrays."""
    return [list(column) for column in zip(*rows.values(), strict=True)] if rows else [[]] * width


# What an erased request keeps: the facts, not the payloads.
_ERASE_REQUEST = """
UPDATE requests SET metadata = '{}', erased_at = coalesce(erased_at, now()),
    record = jsonb_strip_nulls(jsonb_build_object(
        'api_id', api_id, 'status', status, 'resource', resource, 'method', method,
        'submitted_at', record->'submitted_at', 'completed_at', record->'completed_at',
        'timed_out_at', record->'timed_out_at', 'result_cb', record->'result_cb',
        'archived', record->'archived'))
WHERE api_id = $1"""
_ERASE_EVENTS = """
UPDATE events SET erased_at = coalesce(erased_at, now()),
    body = jsonb_strip_nulls(jsonb_build_object(
        'id', event_id, 'type', type, 'created_at', body->'created_at', 'api_id', api_id))
WHERE api_id = $1"""


class HistoryStore:
    def __init__(self, pool: asyncpg.Pool, *, retention_s: int) -> None:
        self.pool = pool
        self.retention_s = retention_s
        self._days: set[dt.date] = set()  # days whose partitions are known to exist

    @classmethod
    async def connect(
        cls, url: str, *, retention_s: int, min_size: int = 1, max_size: int = 5, migrate_now: bool = True
    ) -> HistoryStore:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=30,
            # A generic plan for ``status = $1`` assumes a third of the rows match and scans the
            # partitions the archiver keeps rewriting (measured: bench --phases history): plan
            # each list query for its own values (about 0.3 ms of planning).
            server_settings={"plan_cache_mode": "force_custom_plan"},
        )
        store = cls(pool, retention_s=retention_s)
        if migrate_now:
            async with pool.acquire() as conn:
                await migrate(conn)
        return store

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        async with self.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")

    # --- writing ----------------------------------------------------------------------------

    async def write(self, trees: list[Tree]) -> int:
        """Upsert ``trees`` in one transaction; returns the rows written."""
        requests = [t.request for t in trees if t.request is not None]
        events = [e for t in trees for e in t.events]
        deliveries = [d for t in trees for d in t.deliveries]
        attempts = [a for t in trees for a in t.attempts]
        callbacks = [c for t in trees for c in t.callbacks]
        days = {partitions.day_of(r.submitted_at) for r in requests}
        days |= {partitions.day_of(e.created_at) for e in events}
        days |= {partitions.day_of(d.created_at) for d in deliveries}
        days |= {partitions.day_of(a.at) for a in attempts}
        days |= {partitions.day_of(c.received_at) for c in callbacks}
        async with self.pool.acquire() as conn:
            if not days <= self._days:
                await partitions.ensure(conn, days - self._days)
                self._days |= days
            async with conn.transaction():
                batch: dict[Any, tuple[Any, ...]]
                if requests:
                    batch = {(r.api_id, r.submitted_at): request_args(r) for r in requests}
                    await conn.execute(_UPSERT_REQUEST, *_columns(batch, 9))
                if events:
                    batch = {(e.event_id, e.created_at): event_args(e) for e in events}
                    await conn.execute(_UPSERT_EVENT, *_columns(batch, 5))
                if deliveries:
                    batch = {(d.delivery_id, d.created_at): delivery_args(d) for d in deliveries}
                    await conn.execute(_UPSERT_DELIVERY, *_columns(batch, 12))
                if attempts:
                    batch = {(a.delivery_id, a.cycle, a.attempt, a.at): attempt_args(a) for a in attempts}
                    await conn.execute(_UPSERT_ATTEMPT, *_columns(batch, 12))
                if callbacks:
                    batch = {callback_key(c): callback_args(c) for c in callbacks}
                    await conn.execute(_UPSERT_CALLBACK, *_columns(batch, 10))
                for r in requests:
                    if r.record.get("erased_at"):  # erased in Redis: what an earlier copy wrote goes too
                        await _erase(conn, r.api_id)
        return len(requests) + len(events) + len(deliveries) + len(attempts) + len(callbacks)

    async def erase(self, api_id: str) -> bool:
        """Erase a request's payloads (metadata, result, callback bodies, event data, answer
        excerpts), keeping the bare facts (ids, types, times, statuses) and ``erased_at``, in one
        transaction; False if PostgreSQL has no such request."""
        if not storable(api_id):
            return False
        async with self.pool.acquire() as conn, conn.transaction():
            return await _erase(conn, api_id)

    async def maintain(self, now_ms: int) -> list[str]:
        """Create today's and tomorrow's partitions, drop those past retention (the sweeps call it)."""
        today = partitions.day_of(now_ms)
        async with self.pool.acquire() as conn:
            await partitions.ensure(conn, [today, today + dt.timedelta(days=1)])
            dropped = await partitions.drop_expired(conn, now_ms, self.retention_s)
        if dropped:
            self._days.clear()
        return dropped

    # --- reading ----------------------------------------------------------------------------

    async def get_tree(self, api_id: str) -> Tree | None:
        """A request with its events, deliveries and attempts, as last copied; None if unknown."""
        if not storable(api_id):
            return None
        async with self.pool.acquire() as conn:
            request = await conn.fetchrow(
                "SELECT * FROM requests WHERE api_id = $1 ORDER BY submitted_at DESC LIMIT 1", api_id
            )
            if request is None:
                return None
            events = await conn.fetch(
                "SELECT * FROM events WHERE api_id = $1 ORDER BY created_at, event_id", api_id
            )
            deliveries = await conn.fetch(
                "SELECT * FROM deliveries WHERE api_id = $1 ORDER BY created_at, delivery_id", api_id
            )
            attempts = await conn.fetch(
                "SELECT * FROM attempts WHERE api_id = $1 ORDER BY at, delivery_id, cycle, attempt", api_id
            )
            callbacks = await conn.fetch(
                "SELECT * FROM callbacks WHERE api_id = $1 ORDER BY received_at, callback_id", api_id
            )
        return rows.tree_of(request, events, deliveries, attempts, callbacks)

    # --- lists ------------------------------------------------------------------------------

    async def _page(
        self,
        table: str,
        id_column: str,
        time_column: str,
        where: list[str],
        args: list[Any],
        exclude: list[str],
        skip: int,
        n: int,
        columns: str,
    ) -> tuple[int, bool, list[asyncpg.Record]]:
        """Rows of ``table`` matching ``where`` (and not ``exclude``d), newest first: (count,
        whether the count is an estimate, ``n`` rows from ``skip``). The count is exact up to
        COUNT_EXACT_MAX rows, an estimate of the planner's above."""
        if not storable(*(a for a in args if isinstance(a, str))):
            return 0, False, []
        conditions = list(where)
        params = list(args)
        exclude = [e for e in exclude if storable(e)]
        if exclude:
            params.append(exclude)
            conditions.append(
                f"NOT EXISTS (SELECT 1 FROM unnest(${len(params)}::text[]) x WHERE x = {id_column})"  # noqa: S608
            )
        clause = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        order = f" ORDER BY {time_column} DESC, {id_column} DESC"
        # Identifiers are this module's own constants; every value is a bind parameter.
        skip, n = min(int(skip), MAX_ROWS), min(int(n), MAX_ROWS)  # past bigint: nothing is that far
        page_sql = f"SELECT {columns} FROM {table}{clause}{order} OFFSET {skip} LIMIT {n}"  # noqa: S608
        count_sql = f"SELECT count(*) FROM (SELECT 1 FROM {table}{clause} LIMIT {COUNT_EXACT_MAX + 1}) t"  # noqa: S608
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(page_sql, *params)
            total = int(await conn.fetchval(count_sql, *params))
            estimated = total > COUNT_EXACT_MAX
            if estimated:
                explain = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table}{clause}"  # noqa: S608
                plan = await conn.fetchval(explain, *params)
                total = max(total, int(json.loads(plan)[0]["Plan"]["Plan Rows"]))
        return total, estimated, rows

    async def list_requests(
        self, status: str | None, exclude: list[str], skip: int, n: int
    ) -> tuple[int, bool, list[tuple[int, str, dict[str, Any]]]]:
        where, args = (["status = $1"], [status]) if status else ([], [])
        total, estimated, rows = await self._page(
            "requests",
            "api_id",
            "submitted_at",
            where,
            args,
            exclude,
            skip,
            n,
            "api_id, submitted_at, record",
        )
        return (
            total,
            estimated,
            [(at_ms(r["submitted_at"]), r["api_id"], json.loads(r["record"])) for r in rows],
        )

    async def list_deliveries(
        self,
        *,
        status: str,
        subscription: str,
        event_type: str,
        since_ms: int | None,
        until_ms: int | None,
        exclude: list[str],
        skip: int,
        n: int,
    ) -> tuple[int, bool, list[tuple[int, str, tuple[DeliveryRecord, list[AttemptLog]]]]]:
        """Deliveries as (record, attempt log) pairs, the log as the Redis one reads."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("status", status),
            ("subscription_id", subscription),
            ("event_type", event_type),
        ):
            if value:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if since_ms is not None:
            args.append(ts(since_ms))
            where.append(f"created_at >= ${len(args)}")
        if until_ms is not None:
            args.append(ts(until_ms))
            where.append(f"created_at <= ${len(args)}")
        total, estimated, rows = await self._page(
            "deliveries", "delivery_id", "created_at", where, args, exclude, skip, n,
            "delivery_id, created_at, record",
        )  # fmt: skip
        oldest = min((at_ms(r["created_at"]) for r in rows), default=None)
        logs = await self.attempt_logs([r["delivery_id"] for r in rows], oldest)
        out = [
            (
                at_ms(r["created_at"]),
                r["delivery_id"],
                (json.loads(r["record"]), logs.get(r["delivery_id"], [])),
            )
            for r in rows
        ]
        return total, estimated, out

    async def attempt_logs(
        self, delivery_ids: list[str], since_ms: int | None = None
    ) -> dict[str, list[AttemptLog]]:
        """The attempt logs of ``delivery_ids``, each entry as the delivery log in Redis has it.
        ``since_ms``: the oldest of those deliveries' creation (no attempt is older), so that only
        the partitions from that day on are read."""
        if not delivery_ids:
            return {}
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT * FROM attempts WHERE delivery_id = ANY($1::text[]) AND at >= $2"
                " ORDER BY at, cycle, attempt",
                delivery_ids,
                ts(since_ms) if since_ms is not None else dt.datetime.min.replace(tzinfo=dt.UTC),
            )
        logs: dict[str, list[AttemptLog]] = {}
        for r in rows:
            logs.setdefault(r["delivery_id"], []).append(
                {
                    "attempt": r["attempt"],
                    "cycle": r["cycle"],
                    "at": iso(r["at"]),
                    "outcome": r["outcome"],
                    "status_code": r["status_code"],
                    "duration_ms": r["duration_ms"] or 0.0,
                    "error": r["error"] or "",
                    "response": r["response"] or "",  # "" once erased
                }
            )
        return logs

    async def list_events(
        self, event_type: str, exclude: list[str], skip: int, n: int
    ) -> tuple[int, bool, list[tuple[int, str, EventJson]]]:
        total, estimated, rows = await self._page(
            "events", "event_id", "created_at", ["type = $1"], [event_type], exclude, skip, n,
            "event_id, created_at, body",
        )  # fmt: skip
        return (
            total,
            estimated,
            [(at_ms(r["created_at"]), r["event_id"], json.loads(r["body"])) for r in rows],
        )

    async def get_delivery(self, delivery_id: str) -> tuple[DeliveryRecord, list[AttemptLog]] | None:
        if not storable(delivery_id):
            return None
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT record FROM deliveries WHERE delivery_id = $1 ORDER BY created_at DESC LIMIT 1",
                delivery_id,
            )
        if row is None:
            return None
        logs = await self.attempt_logs([delivery_id])
        return json.loads(row["record"]), logs.get(delivery_id, [])

    async def get_event(self, event_id: str) -> EventJson | None:
        if not storable(event_id):
            return None
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT body FROM events WHERE event_id = $1 ORDER BY created_at DESC LIMIT 1", event_id
            )
        if row is None:
            return None
        event: EventJson = json.loads(row["body"])
        return event

    async def event_deliveries(self, event_id: str) -> list[DeliveryRecord]:
        if not storable(event_id):
            return []
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT record FROM deliveries WHERE event_id = $1", event_id)
        return [json.loads(r["record"]) for r in rows]


async def _erase(conn: Conn, api_id: str) -> bool:
    found = await conn.execute(_ERASE_REQUEST, api_id)
    await conn.execute(_ERASE_EVENTS, api_id)
    await conn.execute("UPDATE attempts SET response = NULL, erased_at = now() WHERE api_id = $1", api_id)
    await conn.execute(
        "UPDATE callbacks SET payload = NULL, erased_at = coalesce(erased_at, now()) WHERE api_id = $1",
        api_id,
    )
    return bool(found != "UPDATE 0")
