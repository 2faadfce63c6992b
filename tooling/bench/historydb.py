"""The history phase's PostgreSQL-only parts: the writer's throughput and the list queries.

Both run on databases of their own (in the phase's private PostgreSQL) and model their rows on one
real request tree the phase's stack copied (its JSON records, targets and bodies), so that row
sizes are the real ones.

The list queries run over a history filled in SQL (``INSERT … SELECT FROM generate_series``, the
partitions made by ``gateway.history.partitions.ensure`` first), spread evenly over the 7 days up
to now: ``attempts`` rows, a quarter as many deliveries (4 attempts each: three failures, then the
delivery's outcome), one event per delivery, a request per 4 events (a result and three message
statuses, to one of 50 subscriptions). 2 % of deliveries failed; requests are 95 % completed, 3 %
timed out, 2 % failed. Then VACUUM ANALYZE (what autovacuum would have done by then), and each
list call as the API makes it (``HistoryStore.list_deliveries`` / ``list_requests``, first page,
n=20, its count and attempt logs included) is timed ``runs`` times after one untimed call.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import resource
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg

from gateway.domain.deliveries import DeliveryRecord
from gateway.domain.events import EventJson
from gateway.domain.history import Tree
from gateway.history import partitions
from gateway.history.store import HistoryStore
from tooling.bench.report import summarize

BATCH = 200  # trees a write, as the archiver's (workers/archive.py)
RETENTION_S = 30 * 86400
SPAN_MS = 7 * partitions.DAY_MS
SUBSCRIPTIONS = 50
PAGE = 20
TARGET_MS = 50.0  # a first page's p99 must stay under this
EXCLUDED = 1_000  # hot ids left out of one of the lists (Redis' part of a merged list)

# --- the writer ---------------------------------------------------------------------------------


def synthetic(template: Tree, base_ms: int) -> Tree:
    """A copy of ``template`` with fresh ids, moved in time to start at ``base_ms``."""
    request = template.request
    assert request is not None
    shift = base_ms - request.submitted_at
    api_id = str(uuid.uuid4())
    events = {e.event_id: "evt_" + secrets.token_hex(16) for e in template.events}
    dlvs = {d.delivery_id: "dlv_" + secrets.token_hex(12) for d in template.deliveries}
    finished = None if request.finished_at is None else request.finished_at + shift
    tree = Tree(
        request=replace(
            request,
            api_id=api_id,
            submitted_at=base_ms,
            finished_at=finished,
            record={**request.record, "api_id": api_id},
        ),
        settled=template.settled,
    )
    for e in template.events:
        eid = events[e.event_id]
        body: EventJson = {**e.body, "id": eid, "api_id": api_id}
        tree.events.append(
            replace(e, event_id=eid, created_at=e.created_at + shift, api_id=api_id, body=body)
        )
    for d in template.deliveries:
        did, eid = dlvs[d.delivery_id], events[d.event_id]
        record: DeliveryRecord = {**d.record, "id": did, "event_id": eid, "api_id": api_id}
        tree.deliveries.append(
            replace(
                d,
                delivery_id=did,
                event_id=eid,
                api_id=api_id,
                created_at=d.created_at + shift,
                updated_at=d.updated_at + shift,
                record=record,
            )
        )
    for a in template.attempts:
        tree.attempts.append(
            replace(
                a,
                delivery_id=dlvs[a.delivery_id],
                event_id=events[a.event_id],
                api_id=api_id,
                at=a.at + shift,
            )
        )
    return tree


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def writer_throughput(url: str, template: Tree, batches: int) -> dict[str, Any]:
    """``batches`` writes of BATCH new trees after one untimed write (partitions, prepared
    statements): rows a second and this process's CPU per row."""
    now = int(time.time() * 1000)
    work = [[synthetic(template, now + b * BATCH + i) for i in range(BATCH)] for b in range(batches + 1)]
    store = await HistoryStore.connect(url, retention_s=RETENTION_S, max_size=1)
    try:
        await store.write(work[0])
        rows, times = 0, []
        cpu, began = _cpu_s(), time.perf_counter()
        for trees in work[1:]:
            start = time.perf_counter()
            rows += await store.write(trees)
            times.append((time.perf_counter() - start) * 1000)
        elapsed, cpu = time.perf_counter() - began, _cpu_s() - cpu
    finally:
        await store.close()
    return {
        "trees": batches * BATCH,
        "rows": rows,
        "rows_per_tree": template.row_count(),
        "batch_trees": BATCH,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(rows / elapsed, 1),
        "trees_per_s": round(batches * BATCH / elapsed, 1),
        "batch_ms": summarize(times),
        "client_cpu_us_per_row": round(cpu * 1e6 / rows, 2),
    }


async def pg_sizes(conn: Any) -> dict[str, dict[str, int]]:
    """Per table: its partitions' rows, bytes (pg_total_relation_size: heap, TOAST, indexes, free
    space maps) and dead row versions (the statistics' count: updated rows not vacuumed yet)."""
    sizes: dict[str, dict[str, int]] = {}
    for table in partitions.TABLES:
        row = await conn.fetchrow(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) AS total,"
            " coalesce(sum(pg_indexes_size(c.oid)), 0) AS indexes,"
            " coalesce(sum(pg_stat_get_dead_tuples(c.oid)), 0) AS dead"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent"
            " WHERE p.relname = $1 AND p.relnamespace = current_schema()::regnamespace",
            table,
        )
        assert row is not None
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608 (a constant)
        sizes[table] = {
            "rows": rows,
            "bytes": int(row["total"]),
            "index_bytes": int(row["indexes"]),
            "dead_rows": int(row["dead"]),
        }
    return sizes


# --- the fill -----------------------------------------------------------------------------------

# Every statement: $1 rows, $2 the first request's epoch ms, $3 ms between requests; then the
# template's JSON. Request r is at $2 + r * $3; its 4 events (the result, then three message
# statuses), their deliveries (event e's is delivery e) and those deliveries' 4 attempts follow it.
# (hashint4(x) & 2147483647) % n: a well-spread 0..n-1 of the integer x. The ids and times are
# computed once a row in a subquery that OFFSET 0 keeps from being flattened into the SELECT list.
_FILL_REQUESTS = """
INSERT INTO requests (api_id, submitted_at, status, resource, method, finished_at, metadata, record)
SELECT aid, to_timestamp(at::float8 / 1000), st, 'Message/', 'POST', to_timestamp((at + 80)::float8 / 1000),
       $4::jsonb,
       $5::jsonb || jsonb_build_object('api_id', aid, 'status', st, 'submitted_at', at::text,
                                      'completed_at', (at + 80)::text)
FROM generate_series(0, $1::int - 1) r,
     LATERAL (SELECT md5('r' || r)::uuid::text AS aid, ($2::bigint + floor(r * $3::float8))::bigint AS at,
                     CASE WHEN (hashint4(r) & 2147483647) % 100 < 2 THEN 'failed'
                          WHEN (hashint4(r) & 2147483647) % 100 < 5 THEN 'timed_out'
                          ELSE 'completed' END AS st OFFSET 0) s"""

_FILL_EVENTS = """
INSERT INTO events (event_id, created_at, api_id, type, body)
SELECT eid, to_timestamp(at::float8 / 1000), aid, t,
       (CASE WHEN e % 4 = 0 THEN $4::jsonb ELSE $5::jsonb END) || jsonb_build_object('id', eid, 'api_id', aid)
FROM generate_series(0, $1::int - 1) e,
     LATERAL (SELECT 'evt_' || md5('e' || e) AS eid, md5('r' || (e / 4))::uuid::text AS aid,
                     ($2::bigint + floor((e / 4) * $3::float8))::bigint + 60 + (e % 4) * 100 AS at,
                     CASE WHEN e % 4 = 0 THEN 'request.completed' ELSE 'message.status' END AS t
              OFFSET 0) s"""

_FILL_DELIVERIES = """
INSERT INTO deliveries (delivery_id, created_at, event_id, api_id, event_type, subscription_id, target,
    status, attempts, cycle, updated_at, record)
SELECT did, to_timestamp(at::float8 / 1000), eid, aid, t, sub,
       $4::jsonb || jsonb_build_object('subscription', sub), st, 4, 0,
       to_timestamp((at + 36000)::float8 / 1000),
       $5::jsonb || jsonb_build_object('id', did, 'sub', sub, 'event_id', eid, 'api_id', aid, 'status', st,
           'event_type', t, 'attempts', '4', 'created_at', at::text, 'updated_at', (at + 36000)::text)
FROM generate_series(0, $1::int - 1) d,
     LATERAL (SELECT 'dlv_' || left(md5('d' || d), 24) AS did, 'evt_' || md5('e' || d) AS eid,
                     md5('r' || (d / 4))::uuid::text AS aid,
                     ($2::bigint + floor((d / 4) * $3::float8))::bigint + 70 + (d % 4) * 100 AS at,
                     CASE WHEN d % 4 = 0 THEN 'request.completed' ELSE 'message.status' END AS t,
                     'sub_' || left(md5('s' || (hashint4(d + 7) & 2147483647) % $6::int), 24) AS sub,
                     CASE WHEN (hashint4(d) & 2147483647) % 100 < 2 THEN 'failed'
                          ELSE 'succeeded' END AS st
              OFFSET 0) s"""

# Delivery d's attempts j = 0..3: 0, 2, 8 and 36 s after it was made; the last one succeeded unless
# the delivery failed.
_FILL_ATTEMPTS = """
INSERT INTO attempts (delivery_id, cycle, attempt, at, event_id, api_id, target, outcome, status_code,
    duration_ms, error, response)
SELECT did, 0, j + 1, to_timestamp((at + (ARRAY[0, 2000, 8000, 36000])[j + 1])::float8 / 1000), eid, aid,
       $4, o, CASE WHEN o = 'success' THEN 204 ELSE 503 END, 2.5 + (d + j) % 7,
       CASE WHEN o = 'success' THEN NULL ELSE 'HTTP 503' END, ''
FROM generate_series(0, $1::int / 4 - 1) d,
     LATERAL (SELECT 'dlv_' || left(md5('d' || d), 24) AS did, 'evt_' || md5('e' || d) AS eid,
                     md5('r' || (d / 4))::uuid::text AS aid,
                     ($2::bigint + floor((d / 4) * $3::float8))::bigint + 70 + (d % 4) * 100 AS at,
                     (hashint4(d) & 2147483647) % 100 >= 2 AS ok
              OFFSET 0) x,
     generate_series(0, 3) j,
     LATERAL (SELECT CASE WHEN j = 3 AND ok THEN 'success' ELSE 'failure' END AS o) s"""


def subscription(n: int) -> str:
    """The fill's n-th subscription id (as the SQL above spells it)."""
    import hashlib

    return "sub_" + hashlib.md5(f"s{n}".encode()).hexdigest()[:24]  # noqa: S324 (an id, not a secret)


def _days(first_ms: int, last_ms: int) -> list[dt.date]:
    day, end, out = partitions.day_of(first_ms), partitions.day_of(last_ms), []
    while day <= end:
        out.append(day)
        day += dt.timedelta(days=1)
    return out


def _templates(tree: Tree) -> dict[str, str]:
    assert tree.request is not None
    status = next((e for e in tree.events if e.type == "message.status"), tree.events[-1])
    delivery = tree.deliveries[0]
    return {
        "metadata": json.dumps(tree.request.metadata),
        "record": json.dumps(tree.request.record),
        "result_body": json.dumps(tree.events[0].body),
        "status_body": json.dumps(status.body),
        "target": json.dumps(delivery.target),
        "delivery": json.dumps(delivery.record),
        "target_url": tree.attempts[0].target if tree.attempts else str(delivery.target.get("url", "")),
    }


async def fill(url: str, template: Tree, attempts: int) -> dict[str, Any]:
    """The history the list queries read: ``attempts`` attempts and the rest to match."""
    deliveries = attempts // 4
    requests = max(1, deliveries // 4)
    now = int(time.time() * 1000)
    first = now - SPAN_MS
    gap = SPAN_MS / requests
    t = _templates(template)
    store = await HistoryStore.connect(url, retention_s=RETENTION_S, max_size=1)
    try:
        async with store.pool.acquire() as conn:
            made = await partitions.ensure(conn, _days(first, now + 120_000))
            # A database of the bench's own: no WAL for the fill (reads are the same either way).
            for name in made:
                await conn.execute(f"ALTER TABLE {name} SET UNLOGGED")
    finally:
        await store.close()
    began = time.perf_counter()
    # Two connections (a core each), about the same work each.
    statements = {
        "attempts": (_FILL_ATTEMPTS, (attempts, first, gap, t["target_url"])),
        "requests": (_FILL_REQUESTS, (requests, first, gap, t["metadata"], t["record"])),
        "deliveries": (_FILL_DELIVERIES, (deliveries, first, gap, t["target"], t["delivery"], SUBSCRIPTIONS)),
        "events": (_FILL_EVENTS, (deliveries, first, gap, t["result_body"], t["status_body"])),
    }
    lanes = (("attempts", "requests"), ("deliveries", "events"))
    took: dict[str, float] = {}
    await asyncio.gather(*(_run_all(url, [(n, *statements[n]) for n in lane], took) for lane in lanes))
    filled = time.perf_counter() - began
    vacuum = [[(f"vacuum {n}", f"VACUUM ANALYZE {n}", ()) for n in lane] for lane in lanes]
    await asyncio.gather(*(_run_all(url, lane, took) for lane in vacuum))
    vacuumed = time.perf_counter() - began - filled
    # What the fill left for the kernel to write, written now rather than under the timed queries.
    began = time.perf_counter()
    await asyncio.to_thread(os.sync)
    synced = time.perf_counter() - began
    db = await asyncpg.connect(url)
    try:
        size = int(await db.fetchval("SELECT pg_database_size(current_database())"))
        sizes = await pg_sizes(db)
    finally:
        await db.close()
    return {
        "attempts": deliveries * 4,
        "deliveries": deliveries,
        "events": deliveries,
        "requests": requests,
        "subscriptions": SUBSCRIPTIONS,
        "days": len(_days(first, now)),
        "first_ms": first,
        "last_ms": now,
        "fill_s": round(filled, 1),
        "vacuum_analyze_s": round(vacuumed, 1),
        "sync_s": round(synced, 1),
        "database_bytes": size,
        # Tables the synthetic history fills (its trees have no callbacks: an empty table's size is
        # its empty partitions', not a row's).
        "bytes_per_row": {k: round(v["bytes"] / v["rows"], 1) for k, v in sizes.items() if v["rows"]},
        "statement_s": {k: round(v, 1) for k, v in took.items()},
    }


async def _run_all(
    url: str, statements: list[tuple[str, str, tuple[Any, ...]]], took: dict[str, float]
) -> None:
    """``statements`` in order on a connection of their own; how long each took into ``took``."""
    conn = await asyncpg.connect(url)
    try:
        for name, sql, args in statements:
            began = time.perf_counter()
            await conn.execute(sql, *args, timeout=600)
            took[name] = time.perf_counter() - began
    finally:
        await conn.close()


# --- the list queries -------------------------------------------------------------------------

Call = Callable[[int], Awaitable[Any]]


def _cases(store: HistoryStore, shape: dict[str, Any]) -> list[tuple[str, Call]]:
    first, last = shape["first_ms"], shape["last_ms"]
    rng = random.Random(7)  # where the windows fall, the same every run
    hot = [f"dlv_{secrets.token_hex(12)}" for _ in range(EXCLUDED)]

    def deliveries(**given: Any) -> Call:
        async def call(i: int) -> Any:
            args: dict[str, Any] = {"status": "", "subscription": "", "event_type": "", "since_ms": None}
            args |= {"until_ms": None, "exclude": [], "skip": 0, "n": PAGE}
            for key, value in given.items():
                args[key] = value(i) if callable(value) else value
            return await store.list_deliveries(**args)

        return call

    def window(i: int) -> int:
        return rng.randrange(first, last - 3_600_000)

    since: dict[int, int] = {}

    def since_ms(i: int) -> int:
        return since.setdefault(i, window(i))

    def requests(status: str) -> Call:
        async def call(i: int) -> Any:
            return await store.list_requests(status, [], 0, PAGE)

        return call

    return [
        ("list_deliveries, no filter", deliveries()),
        ("list_deliveries, status=failed", deliveries(status="failed")),
        (
            "list_deliveries, subscription_id (1 of 50)",
            deliveries(subscription=lambda i: subscription(i % 50)),
        ),
        ("list_deliveries, event_type=request.completed", deliveries(event_type="request.completed")),
        (
            "list_deliveries, created_at in a 1-hour range",
            deliveries(since_ms=since_ms, until_ms=lambda i: since_ms(i) + 3_600_000),
        ),
        (f"list_deliveries, no filter, {EXCLUDED:,} hot ids excluded", deliveries(exclude=hot)),
        ("list_requests, status=completed", requests("completed")),
        ("list_requests, status=timed_out", requests("timed_out")),
    ]


def kind_of(sql: str) -> str | None:
    """Which of a list call's statements ``sql`` is (None: the pool's reset between two)."""
    text = sql.lstrip()
    if ";" in text.rstrip().rstrip(";"):
        return None
    if text.startswith("EXPLAIN"):
        return "estimate"
    if text.startswith("SELECT count("):
        return "count"
    if " FROM attempts " in text:
        return "attempt_logs"
    return "page"


def literal(value: Any) -> str:
    """``value`` as an SQL literal, for EXECUTE's arguments (the bench's own values only)."""
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, list):
        return "ARRAY[" + ",".join(literal(v) for v in value) + "]::text[]"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


async def explain(conn: Any, sql: str, args: tuple[Any, ...]) -> dict[str, list[str]]:
    """EXPLAIN ANALYZE of ``sql`` with a custom plan (planned for these values) and with the
    generic plan (what a prepared statement runs after its first five executions, as the pooled
    connections' statement cache does)."""
    custom = [str(r[0]) for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)]
    await conn.execute("PREPARE bench_list AS " + sql)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        call = "EXECUTE bench_list" + (f"({', '.join(literal(a) for a in args)})" if args else "")
        generic = [str(r[0]) for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + call)]
    finally:
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("DEALLOCATE bench_list")
    return {"custom": custom, "generic": generic}


def execution_ms(plan: list[str]) -> float:
    line = next((p for p in reversed(plan) if p.startswith("Execution Time:")), "")
    return float(line.split()[2]) if line else float("nan")


class Statements:
    """Each statement a list call runs, its elapsed times, and one example of its SQL."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = {}
        self.sql: dict[str, tuple[str, tuple[Any, ...]]] = {}

    def __call__(self, record: Any) -> None:
        kind = kind_of(str(record.query))
        if kind is not None:
            self.ms.setdefault(kind, []).append(float(record.elapsed) * 1000)
            self.sql.setdefault(kind, (str(record.query), tuple(record.args or ())))

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for kind, values in self.ms.items():
            ms = summarize(values)
            out[kind] = {"p50": round(ms["p50"], 2), "p99": round(ms["p99"], 2)}
        return out


async def _time(store: HistoryStore, call: Call, runs: int) -> tuple[float, list[float], Statements]:
    """One untimed call, then ``runs`` timed ones with their statements' times."""
    statements = Statements()
    async with store.pool.acquire() as conn:
        conn.add_query_logger(statements)
    try:
        began = time.perf_counter()
        await call(0)
        cold = (time.perf_counter() - began) * 1000
        statements.ms.clear()
        times = []
        for i in range(1, runs + 1):
            began = time.perf_counter()
            await call(i)
            times.append((time.perf_counter() - began) * 1000)
    finally:
        async with store.pool.acquire() as conn:
            conn.remove_query_logger(statements)
    return cold, times, statements


async def _query(store: HistoryStore, call: Call, runs: int) -> dict[str, Any]:
    cold, times, statements = await _time(store, call, runs)
    ms = summarize(times)
    plans: dict[str, Any] = {}
    async with store.pool.acquire() as conn:
        for kind, (sql, args) in statements.sql.items():
            if kind != "estimate":
                plan = await explain(conn, sql, args)
                plans[kind] = {
                    "sql": " ".join(sql.split()),
                    "custom_ms": execution_ms(plan["custom"]),
                    "generic_ms": execution_ms(plan["generic"]),
                    **plan,
                }
    return {
        "runs": runs,
        "first_call_ms": round(cold, 2),
        "ms": {"p50": round(ms["p50"], 2), "p99": round(ms["p99"], 2), "max": round(ms["max"], 2)},
        "under_target": ms["p99"] < TARGET_MS,
        "statements_ms": statements.summary(),
        "explain": plans,
    }


async def list_queries(url: str, template: Tree, attempts: int, runs: int) -> dict[str, Any]:
    shape = await fill(url, template, attempts)
    store = await HistoryStore.connect(url, retention_s=RETENTION_S, max_size=1)
    try:
        cases = _cases(store, shape)
        results = {name: await _query(store, call, runs) for name, call in cases}
        # As the archiver leaves the newest partitions: each request row upserted again (a re-copy)
        # since the last VACUUM, so that their pages are not all-visible; autoanalyze has run.
        async with store.pool.acquire() as conn:
            since = partitions.DAY_MS
            await conn.execute(
                "UPDATE requests SET archived_at = now() WHERE submitted_at > $1",
                dt.datetime.fromtimestamp((shape["last_ms"] - since) / 1000, tz=dt.UTC),
            )
            await conn.execute("ANALYZE requests")
        name, call = cases[-1]
        results[f"{name}, the last day re-copied since VACUUM"] = await _query(store, call, runs)
    finally:
        await store.close()
    return {"data": shape, "target_p99_ms": TARGET_MS, "page": PAGE, "queries": results}
