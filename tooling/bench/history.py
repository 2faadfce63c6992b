"""Phase 6: history in PostgreSQL: what a finished request costs in Redis and in PostgreSQL, how
fast the history writer goes, how far behind the outbox runs, and how fast the lists read.

The phase runs a stack of its own (private redis-server and PostgreSQL, the Plivo sandbox, the
gateway, one worker, a subscriber answering 204 at once) with ``GATEWAY_HOT_RETENTION`` = 2 s, so
that Redis' ``used_memory`` delta is these requests and nothing else, and the PostgreSQL sizes are
theirs. The upstream and API rate limits are off and the subscription's bucket is wide (the bench
submits faster than Plivo's account limit allows; the figures are about history, not about them).

1. Redis bytes per finished request: ``history_requests`` Message requests with status events
   (the sandbox sends the result and queued / sent / delivered: 4 events) to one ``*`` subscription
   (4 deliveries, one attempt each); once every delivery succeeded and the archive is empty,
   ``INFO used_memory`` delta / N and ``MEMORY USAGE`` of every key by kind, (a) right after the copy,
   (b) after the hot retention, and (c) a what-if: the worker stopped, the bench calls the archiver's
   own ``ArchiveStore.release(forget=True)`` on the same trees, then waits the hot retention again
   (what (b) becomes once the worker forgets; equal to (b) when it already does).
2. PostgreSQL bytes per finished request: the growth of ``pg_total_relation_size`` over every
   partition of requests, events, deliveries and attempts (indexes and TOAST included) / N, same run
   (dead row versions of re-copied trees included); and the same rows at the bytes a row takes in
   item 5's vacuumed 5M-attempt history.
3. The history writer (``tooling.bench.historydb``): ``HistoryStore.write`` of synthetic trees, 200 a
   batch, from this process: rows/s and client CPU per row.
4. Outbox lag: submits at ``history_rate`` (50/s: at 100/s the sandbox's own httpx callbacks need
   more CPU than the 2 cores have left, and submits queue for seconds) for ``history_duration`` s;
   every 50 ms Redis ``TIME`` minus the archive zset's lowest score (``ArchiveStore.oldest_age_ms``).
   GATEWAY_HISTORY_DELAY (0.5 s) is part of it: a change is not copied before it is that old. A
   member's score is its last change, so a tree that keeps changing counts from its last change.
5. List queries over ``history_attempts`` attempt rows (``tooling.bench.historydb``), each call
   timed as the API makes it, with EXPLAIN ANALYZE of its statements under a plan made for the
   values and under the generic plan the pool's prepared statements switch to after 5 runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from gateway.history.store import HistoryStore
from gateway.store.archive import ArchiveStore
from gateway.store.keys import Keys
from tooling.bench import historydb, procs, steady
from tooling.bench.bulk import metadata_of
from tooling.bench.options import BenchOptions
from tooling.bench.report import fmt, summarize
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis, free_port

PREFIX = "cg:"
KEYS = Keys(PREFIX)
HOT_RETENTION_S = 2
SUBMIT_CONCURRENCY = 16
BURST_RATE = 40  # submits a second at most in the footprint's burst (submit_burst)
IN_FLIGHT = 64  # submits at once at most in the fixed-rate run
SETTLE_S = 120.0  # at most, for every delivery to succeed and the archive to empty
SAMPLE_S = 0.05
WARMUP_S = 1.0  # lag samples left out at the start of the fixed-rate run (the outbox filling up)
WARMUP_REQUESTS = 10
EVENTS_PER_REQUEST = 4  # the result and three message statuses
MESSAGE = {"src": "14155550100", "dst": "14155550123", "text": "Your verification code is 482913"}


@dataclass
class Stack:
    children: procs.Children
    env: dict[str, str]
    redis_url: str
    postgres: EmbeddedPostgres
    api: str
    api_key: str
    hook: str

    @property
    def database_url(self) -> str:
        return self.postgres.url()


def _env(redis_url: str, database_url: str, port: int, sandbox: str, opts: BenchOptions) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "GATEWAY_KEY_PREFIX": PREFIX,
        "PLIVO_AUTH_ID": "MABENCH0000000000000",
        "PLIVO_AUTH_TOKEN": secrets.token_urlsafe(30),
        "PLIVO_API_URL": sandbox,
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_API_KEYS": "cgk_" + secrets.token_urlsafe(24),
        "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
        "GATEWAY_HOT_RETENTION": str(HOT_RETENTION_S),
        "UPSTREAM_RATE_LIMIT": "0",
        "GATEWAY_API_RATE_LIMIT": "0",
        "GATEWAY_SUBSCRIPTION_RATE": "100000",
        "GATEWAY_SUBSCRIPTION_BURST": "100000",
        "GATEWAY_SUBSCRIPTION_CONCURRENCY": "64",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": opts.log_level,
    }


@contextlib.contextmanager
def started(opts: BenchOptions, workdir: Path) -> Iterator[Stack]:
    """The phase's own stack, up; everything stopped on leaving."""
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(EmbeddedRedis())
        postgres = stack.enter_context(EmbeddedPostgres())
        children = stack.enter_context(procs.Children(workdir))
        port, sandbox_port, hook_port = free_port(), free_port(), free_port()
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        env = _env(redis.url, postgres.url(), port, sandbox, opts)
        children.spawn("sandbox", ["-m", "gateway.cli", "sandbox", "--port", str(sandbox_port)], env)
        procs.wait_http(children, "sandbox", sandbox + "/_sandbox/requests")
        # Plivo retries a callback it could not deliver; the sandbox does so only when told. On a
        # slow two-core host its own httpx client sometimes misses its 10 s timeout under load.
        httpx.post(sandbox + "/_sandbox/config", json={"retries": 4, "retry_delay": 2.0}).raise_for_status()
        procs.serve(children, "subscriber", "tooling.bench.apps:no_content_subscriber_app", hook_port, 1, env)
        procs.serve(children, "gateway", procs.GATEWAY_FACTORY, port, opts.server_workers, env)
        hook = f"http://127.0.0.1:{hook_port}/hook"
        api_key = env["GATEWAY_API_KEYS"]
        yield Stack(children, env, redis.url, postgres, env["GATEWAY_PUBLIC_URL"], api_key, hook)


async def start_worker(stack: Stack, redis: Redis) -> None:
    """``callback-gateway worker``, once it reads the inbox."""
    stack.children.spawn("worker", ["-m", "gateway.cli", "worker"], stack.env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        clients: list[dict[str, Any]] = await redis.client_list()
        if any(c.get("cmd") == "xreadgroup" for c in clients):
            return
        if not stack.children.pids("worker"):
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the worker did not start:\n{stack.children.log_tail('worker')}")


def stop_worker(stack: Stack) -> None:
    for name, proc in list(stack.children.procs):
        if name == "worker":
            stack.children.stop(proc)


# --- Redis bytes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    used: int  # INFO used_memory less the clients' buffers (mem_clients_normal)
    raw: int  # INFO used_memory
    info: dict[str, int]  # the parts of used_memory INFO shows (INFO_FIELDS)
    kinds: dict[str, tuple[int, int]]  # key kind -> (keys, MEMORY USAGE bytes)


INFO_FIELDS = (
    "mem_clients_normal",
    "used_memory_overhead",
    "used_memory_dataset",
    "used_memory_scripts",
    "mem_not_counted_for_evict",
)


def kind_of(key: str) -> str:
    """``req``, ``dlvlog``, ``deliveries`` (any of its indexes), ``dedup``, ``arq``…"""
    return key.removeprefix(PREFIX).split(":", 1)[0]


async def snapshot(redis: Redis) -> Snapshot:
    """Every key's ``MEMORY USAGE`` (exact: no sampling), by kind, then ``used_memory`` less what
    the clients' buffers hold (the bench's own pipelines, the stack's connections: not the
    requests'). The scan comes first: it also expires the keys past their TTL (as reading would)."""
    kinds: dict[str, list[int]] = {}
    batch: list[str] = []

    async def measure() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.memory_usage(key, samples=0)
            sizes = await pipe.execute()
        for key, size in zip(batch, sizes, strict=True):
            if size is not None:
                entry = kinds.setdefault(kind_of(key), [0, 0])
                entry[0] += 1
                entry[1] += int(size)
        batch.clear()

    async for key in redis.scan_iter(count=1000):
        batch.append(key)
        if len(batch) >= 200:
            await measure()
    await measure()
    await asyncio.sleep(0.5)  # Redis' cron shrinks the query buffers the pipelines grew
    info = await redis.info("memory")
    used = int(info["used_memory"])
    by_kind = {k: (v[0], v[1]) for k, v in sorted(kinds.items())}
    parts = {k: int(info.get(k, 0)) for k in INFO_FIELDS}
    return Snapshot(used - parts["mem_clients_normal"], used, parts, by_kind)


def per_request(before: Snapshot, after: Snapshot, count: int) -> dict[str, Any]:
    """What ``count`` requests added between two snapshots, per request."""
    by_kind: dict[str, dict[str, float]] = {}
    for kind in sorted(set(before.kinds) | set(after.kinds)):
        keys0, bytes0 = before.kinds.get(kind, (0, 0))
        keys1, bytes1 = after.kinds.get(kind, (0, 0))
        if (keys1, bytes1) != (keys0, bytes0):
            by_kind[kind] = {
                "keys": round((keys1 - keys0) / count, 2),
                "bytes": round((bytes1 - bytes0) / count, 1),
            }
    usage = sum(v["bytes"] for v in by_kind.values())
    return {
        "bytes_per_request": round((after.used - before.used) / count, 1),
        "used_memory_delta_per_request": round((after.raw - before.raw) / count, 1),
        "info_delta_per_request": {
            k: round((after.info[k] - before.info[k]) / count, 1) for k in INFO_FIELDS
        },
        "memory_usage_per_request": round(usage, 1),
        "keys_per_request": round(sum(v["keys"] for v in by_kind.values()), 2),
        "by_kind": by_kind,
    }


# --- the stack at work ------------------------------------------------------------------------


def _body(n: int, metadata_bytes: int) -> dict[str, Any]:
    return {
        "resource": "Message/",
        "params": MESSAGE,
        "metadata": metadata_of(metadata_bytes, n),
        "status_events": True,
    }


async def submit(client: httpx.AsyncClient, stack: Stack, n: int, metadata_bytes: int) -> str:
    response = await client.post(
        stack.api + "/v1/requests",
        json=_body(n, metadata_bytes),
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )
    if response.status_code != 202:
        raise RuntimeError(f"submit answered {response.status_code}: {response.text[:300]}")
    return str(response.json()["api_id"])


async def submit_burst(client: httpx.AsyncClient, stack: Stack, count: int, metadata_bytes: int) -> list[str]:
    """``count`` submits, SUBMIT_CONCURRENCY at a time and at most BURST_RATE a second: each brings
    four callbacks from the sandbox, which does not retry one it could not deliver within its
    timeout (Plivo does, a minute later), so an unpaced burst on a slow two-core host lost some."""
    ids: list[str] = []
    began = time.monotonic()
    for start in range(0, count, SUBMIT_CONCURRENCY):
        batch = range(start, min(count, start + SUBMIT_CONCURRENCY))
        ids += await asyncio.gather(*(submit(client, stack, n, metadata_bytes) for n in batch))
        await asyncio.sleep(max(0.0, began + batch.stop / BURST_RATE - time.monotonic()))
    return ids


async def subscribe(client: httpx.AsyncClient, stack: Stack) -> None:
    response = await client.post(
        stack.api + "/v1/subscriptions",
        json={"url": stack.hook, "event_types": ["*"]},
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )
    if response.status_code not in (200, 201):
        raise RuntimeError(f"subscription refused ({response.status_code}): {response.text[:300]}")


async def _counts(conn: asyncpg.Connection[Any]) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM requests WHERE status = 'completed') AS requests,"
        " (SELECT count(*) FROM events) AS events,"
        " (SELECT count(*) FROM deliveries WHERE status = 'succeeded') AS deliveries,"
        " (SELECT count(*) FROM attempts) AS attempts"
    )
    assert row is not None
    return {k: int(v) for k, v in row.items()}


async def settle(redis: Redis, conn: asyncpg.Connection[Any], requests: int) -> float:
    """Until ``requests`` requests are completed in PostgreSQL with every delivery succeeded and
    nothing is left in the archive; returns the seconds it took."""
    began = time.monotonic()
    want = EVENTS_PER_REQUEST * requests
    seen: dict[str, int] = {}
    while time.monotonic() - began < SETTLE_S:
        if not await redis.zcard(KEYS.archive):
            seen = await _counts(conn)
            if seen["requests"] >= requests and seen["deliveries"] >= want:
                return time.monotonic() - began
        await asyncio.sleep(0.1)
    raise RuntimeError(
        f"not settled after {SETTLE_S:.0f}s: {requests} requests wanted, PostgreSQL has {seen}"
    )


def pg_per_request(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], count: int
) -> dict[str, Any]:
    """What ``count`` requests added to the history tables, per request."""
    delta = {t: {k: after[t][k] - before[t][k] for k in after[t]} for t in after}
    total = sum(s["bytes"] for s in delta.values())
    indexes = sum(s["index_bytes"] for s in delta.values())
    return {
        "bytes_per_request": round(total / count, 1),
        "index_bytes_per_request": round(indexes / count, 1),
        "rows_per_request": round(sum(s["rows"] for s in delta.values()) / count, 2),
        "dead_rows_per_request": round(sum(s["dead_rows"] for s in delta.values()) / count, 2),
        "tables": {
            t: {"rows": s["rows"], "bytes_per_request": round(s["bytes"] / count, 1)}
            for t, s in delta.items()
        },
    }


async def what_if_forget(redis: Redis, api_ids: list[str]) -> int:
    """The archiver's forgetting, done by the bench on trees already copied: each request back in
    the archive, read and released with ``forget=True``. Returns how many trees were settled."""
    archive = ArchiveStore(redis, PREFIX)
    settled = 0
    for start in range(0, len(api_ids), 200):
        seconds, micros = await redis.time()
        score = str(int(seconds) * 1000 + int(micros) // 1000)
        members = [("r:" + a, score) for a in api_ids[start : start + 200]]
        await redis.zadd(KEYS.archive, {m: int(score) for m, _ in members})
        changed = await archive.read(members)
        settled += sum(c.tree.settled for c in changed)
        await archive.release(changed, HOT_RETENTION_S, forget=True)
    return settled


async def forgetting(redis: Redis, api_ids: list[str]) -> bool:
    """Whether the worker's archiver let these requests go (their records marked archived)."""
    for api_id in api_ids[:20]:
        mark: str | None = await redis.hget(KEYS.req(api_id), "h")  # type: ignore[misc]
        if mark:
            return True
    return False


async def hot_wait() -> None:
    await asyncio.sleep(HOT_RETENTION_S + 1.0)


# --- outbox lag -------------------------------------------------------------------------------


async def _sample(archive: ArchiveStore, stop: asyncio.Event, samples: list[tuple[float, int]]) -> None:
    began = time.monotonic()
    tick = 0
    while not stop.is_set():
        samples.append((time.monotonic() - began, await archive.oldest_age_ms() or 0))
        tick += 1
        await asyncio.sleep(max(0.0, began + tick * SAMPLE_S - time.monotonic()))


async def _at_rate(
    client: httpx.AsyncClient, stack: Stack, rate: int, duration: float, metadata_bytes: int
) -> tuple[list[str], list[float]]:
    """Open loop: submit n is due at ``n / rate`` s whatever the answers before it, and its latency
    counts from then (a wait for one of the IN_FLIGHT slots included). The slots keep httpx's pool
    from queueing: a long queue of waiters there costs the client more CPU than the submits."""
    latencies: list[float] = []
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(n: int, due: float) -> str:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        async with slots:
            api_id = await submit(client, stack, n, metadata_bytes)
        latencies.append((time.monotonic() - due) * 1000)
        return api_id

    began = time.monotonic()
    total = int(rate * duration)
    ids = await asyncio.gather(*(one(n, began + n / rate) for n in range(total)))
    return list(ids), latencies


async def outbox_lag(
    client: httpx.AsyncClient, stack: Stack, redis: Redis, conn: asyncpg.Connection[Any], opts: BenchOptions
) -> dict[str, Any]:
    archive = ArchiveStore(redis, PREFIX)
    done = await _counts(conn)
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample(archive, stop, samples))
    began = time.monotonic()
    try:
        ids, latencies = await _at_rate(
            client, stack, opts.history_rate, opts.history_duration, opts.metadata_bytes
        )
    finally:
        stop.set()
        await sampler
    elapsed = time.monotonic() - began
    drain = await settle(redis, conn, done["requests"] + len(ids))
    sampled = samples[-1][0] if samples else 0.0
    steady = [age for at, age in samples if at >= WARMUP_S] or [age for _, age in samples]
    lag = summarize([float(a) for a in steady])
    return {
        "rate": opts.history_rate,
        "duration_s": opts.history_duration,
        "submitted": len(ids),
        "achieved_rate": round(len(ids) / elapsed, 1),
        "submit_ms": summarize(latencies),
        "samples": len(steady),
        "sampled_s": round(sampled, 1),
        "empty_samples": sum(1 for a in steady if a == 0),
        "lag_ms": {"p50": lag["p50"], "p99": lag["p99"], "max": lag["max"]},
        "history_delay_s": 0.5,
        "drained_s": round(drain, 2),
    }


# --- the phase --------------------------------------------------------------------------------


async def _footprint(
    stack: Stack, redis: Redis, client: httpx.AsyncClient, conn: asyncpg.Connection[Any], opts: BenchOptions
) -> tuple[dict[str, Any], list[str]]:
    """Items 1 and 2. A few requests first, settled and past the hot retention, so that what is
    made once (scripts loaded, the subscription's bucket, indexes, today's partitions) is in the
    baseline; then the bucket hashes filled as ``history_steady_rate`` would have (steady.py)."""
    count, md = opts.history_requests, opts.metadata_bytes
    await subscribe(client, stack)
    await submit_burst(client, stack, WARMUP_REQUESTS, md)
    await settle(redis, conn, WARMUP_REQUESTS)
    await hot_wait()
    filled = await steady.fill(redis, PREFIX, opts.history_steady_rate, WARMUP_REQUESTS)
    before, pg_before = await snapshot(redis), await historydb.pg_sizes(conn)
    began = time.monotonic()
    ids = await submit_burst(client, stack, count, md)
    submitted = time.monotonic() - began
    took = await settle(redis, conn, WARMUP_REQUESTS + count)
    copied, pg_after = await snapshot(redis), await historydb.pg_sizes(conn)
    await hot_wait()
    hot = await snapshot(redis)
    forgets = await forgetting(redis, ids)
    stop_worker(stack)
    settled = await what_if_forget(redis, ids)
    await hot_wait()
    what_if = await snapshot(redis)
    out = {
        "requests": count,
        "metadata_bytes": md,
        "steady_rate": opts.history_steady_rate,
        "buckets_filled": filled,
        "submit_s": round(submitted, 2),
        "settled_s": round(took, 2),
        "worker_forgets": forgets,
        "after_copy": per_request(before, copied, count),
        "after_hot_retention": per_request(before, hot, count),
        "what_if_forget": {**per_request(before, what_if, count), "settled_trees": settled},
        "hot_retention_s": HOT_RETENTION_S,
    }
    return {"redis": out, "postgres": pg_per_request(pg_before, pg_after, count)}, ids


async def _live(stack: Stack, opts: BenchOptions) -> tuple[dict[str, Any], str]:
    """Items 1, 2 and 4 on the running stack; also the id of a request to model synthetic trees on."""
    redis = Redis.from_url(stack.redis_url, decode_responses=True)
    conn = await asyncpg.connect(stack.database_url)
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    try:
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            await start_worker(stack, redis)
            footprint, ids = await _footprint(stack, redis, client, conn, opts)
            await start_worker(stack, redis)
            footprint["lag"] = await outbox_lag(client, stack, redis, conn, opts)
    finally:
        await conn.close()
        await redis.aclose()
    return footprint, ids[0]


async def _offline(stack: Stack, opts: BenchOptions, model_id: str) -> dict[str, Any]:
    """Items 3 and 5, on PostgreSQL alone (the stack's processes stopped)."""
    store = await HistoryStore.connect(stack.database_url, retention_s=30 * 86400, max_size=1)
    try:
        template = await store.get_tree(model_id)
    finally:
        await store.close()
    if template is None:
        raise RuntimeError(f"request {model_id} is not in PostgreSQL")
    writer_url = stack.postgres.create_database("bench_writer")
    lists_url = stack.postgres.create_database("bench_lists")
    writer = await historydb.writer_throughput(writer_url, template, opts.history_write_batches)
    lists = await historydb.list_queries(lists_url, template, opts.history_attempts, opts.history_query_runs)
    return {"writer": writer, "lists": lists}


def run(opts: BenchOptions, workdir: Path) -> dict[str, Any]:
    with started(opts, workdir / "history") as stack:
        live, model_id = asyncio.run(_live(stack, opts))
        stack.children.stop_all()
        offline = asyncio.run(_offline(stack, opts, model_id))
    return {"history": {**live, **offline}}


# --- the report -------------------------------------------------------------------------------

Row = tuple[str, str, str]


def _top(by_kind: dict[str, dict[str, float]], count: int = 6) -> str:
    ranked = sorted(by_kind.items(), key=lambda kv: -kv[1]["bytes"])[:count]
    return ", ".join(f"{k} {v['bytes']:,.0f}" for k, v in ranked)


def _usage(part: dict[str, Any]) -> str:
    return (
        f"MEMORY USAGE {part['memory_usage_per_request']:,.0f} B in {part['keys_per_request']:.1f} keys:"
        f" {_top(part['by_kind'])}"
    )


def _redis_rows(r: dict[str, Any]) -> list[Row]:
    n, copy, hot, what = r["requests"], r["after_copy"], r["after_hot_retention"], r["what_if_forget"]
    forgets = "the worker forgets" if r["worker_forgets"] else "the worker keeps all (release forget=False)"
    return [
        (
            "Redis bytes per finished request, after the copy",
            fmt(copy["bytes_per_request"], " B"),
            f"{n:,} Message requests, 4 events, 4 deliveries to a `*` subscription (204); INFO"
            f" used_memory delta / N once all succeeded and the archive is empty; dedup, nonce and"
            f" ref buckets first filled as {r['steady_rate']:g} request/s fills them (steady.py);"
            f" {_usage(copy)}",
        ),
        (
            f"  same, after GATEWAY_HOT_RETENTION ({r['hot_retention_s']} s)",
            fmt(hot["bytes_per_request"], " B"),
            f"{forgets}; {_usage(hot)}; target <= 1,500 B",
        ),
        (
            "  what-if: the archiver forgetting, after the hot retention",
            fmt(what["bytes_per_request"], " B"),
            "bench calls ArchiveStore.release(forget=True) on the same trees"
            f" ({what['settled_trees']:,} settled); {_usage(what)}; target <= 1,500 B",
        ),
    ]


def at_scale(pg: dict[str, Any], per_row: dict[str, float], count: int) -> float:
    """A finished request's rows (as the live run wrote them) at the bytes a row takes in the
    5M-row history (vacuumed, no dead versions, no half-empty pages); a table that history lacks
    (its synthetic trees have no callbacks) at the live run's own bytes per row."""
    tables = pg["tables"]
    return float(
        sum(
            tables[t]["rows"] / count * per_row[t] if t in per_row else tables[t]["bytes_per_request"]
            for t in tables
        )
    )


def _pg_rows(pg: dict[str, Any], writer: dict[str, Any], lag: dict[str, Any], scale: float) -> list[Row]:
    tables = ", ".join(f"{t} {v['bytes_per_request']:,.0f}" for t, v in pg["tables"].items())
    batch, ms, sub = writer["batch_ms"], lag["lag_ms"], lag["submit_ms"]
    return [
        (
            "PostgreSQL bytes per finished request",
            fmt(pg["bytes_per_request"], " B"),
            "pg_total_relation_size delta over the partitions / N, indexes"
            f" {pg['index_bytes_per_request']:,.0f} B of it; {pg['rows_per_request']:.0f} rows"
            f" (+{pg['dead_rows_per_request']:.1f} dead versions from re-copies): {tables}",
        ),
        (
            "  same rows at the size a row takes in the lists' history",
            fmt(scale, " B"),
            "the live run's rows per request x bytes per row of the list queries' history"
            " (vacuumed, pages full)",
        ),
        (
            "history writer, rows/s into PostgreSQL (1 process)",
            fmt(writer["rows_per_s"], "/s"),
            f"HistoryStore.write of {writer['trees']:,} synthetic trees ({writer['rows_per_tree']} rows"
            f" each), {writer['batch_trees']} a batch: p50 / p99 {batch['p50']:.0f} / {batch['p99']:.0f} ms"
            f" a batch; client CPU {writer['client_cpu_us_per_row']:.1f} µs/row (getrusage)",
        ),
        (
            f"outbox lag at {lag['rate']} submits/s, p50 / p99 / max",
            f"{ms['p50']:,.0f} ms",
            f"{ms['p50']:,.0f} / {ms['p99']:,.0f} / {ms['max']:,.0f} ms: Redis TIME - lowest archive score"
            f" every {SAMPLE_S * 1000:.0f} ms while submitting ({lag['sampled_s']:.0f} s, the first"
            f" {WARMUP_S:.0f} s left out); GATEWAY_HISTORY_DELAY {lag['history_delay_s']} s is part of it;"
            f" {lag['submitted']:,} submits at {lag['achieved_rate']:,.0f}/s (submit p50 / p99"
            f" {sub['p50']:,.0f} / {sub['p99']:,.0f} ms), drained {lag['drained_s']:.1f} s after",
        ),
    ]


def _list_rows(lists: dict[str, Any]) -> tuple[list[Row], list[str]]:
    data = lists["data"]
    rows: list[Row] = [
        (
            f"history for the lists: {data['attempts']:,} attempts",
            f"{data['database_bytes'] / 1e9:,.2f} GB",
            f"{data['deliveries']:,} deliveries, {data['events']:,} events, {data['requests']:,} requests"
            f" over {data['days']} days of partitions, filled in {data['fill_s']:.0f} s + VACUUM ANALYZE"
            f" {data['vacuum_analyze_s']:.0f} s",
        )
    ]
    notes = []
    for name, q in lists["queries"].items():
        ms = q["ms"]
        verdict = "under" if q["under_target"] else "OVER"
        slowest = max(q["statements_ms"].items(), key=lambda kv: kv[1]["p99"], default=("-", {"p99": 0.0}))
        rows.append(
            (
                f"  {name}",
                f"{ms['p99']:,.1f} ms",
                f"p50 / p99 {ms['p50']:,.1f} / {ms['p99']:,.1f} ms of {q['runs']} first pages"
                f" (n={lists['page']}), {verdict} the {lists['target_p99_ms']:.0f} ms target; slowest"
                f" statement: {slowest[0]} (p99 {slowest[1]['p99']:,.1f} ms)",
            )
        )
        if not q["under_target"] or _generic_costs(q):
            notes.append(_why(name, q))
    return rows, notes


def _generic_costs(q: dict[str, Any]) -> bool:
    """A statement whose generic plan (what the pooled connections' prepared statements run from
    their sixth execution on) is much slower than a plan made for the values."""
    return any(_slow_plan(p) for p in q["explain"].values())


def _slow_plan(plan: dict[str, Any]) -> bool:
    return bool(plan["generic_ms"] > max(5.0, 3 * plan["custom_ms"]))


def _why(name: str, q: dict[str, Any]) -> str:
    """Which statement it was, with EXPLAIN ANALYZE's times and the generic plan's first Seq Scan."""
    parts = [f"{name}: p99 {q['ms']['p99']:,.1f} ms"]
    plans = {k: p for k, p in q["explain"].items() if _slow_plan(p)}
    if not plans and q["statements_ms"]:
        slowest = max(q["statements_ms"].items(), key=lambda kv: kv[1]["p99"])[0]
        plans = {k: p for k, p in q["explain"].items() if k == slowest}
    for kind, plan in plans.items():
        parts.append(
            f"{kind}: EXPLAIN ANALYZE {plan['custom_ms']:.1f} ms with a plan for the values,"
            f" {plan['generic_ms']:.1f} ms with the generic plan (the pool's after 5 runs)"
        )
        scans = [n for n, line in enumerate(plan["generic"]) if "Seq Scan" in line]
        if scans:
            lines = [x.strip() for x in plan["generic"][scans[0] : scans[0] + 3]]
            parts.append(f"{len(scans)} Seq Scans in the generic plan, the first: " + " / ".join(lines))
    return "; ".join(parts)


def rows(results: dict[str, Any]) -> tuple[list[Row], list[str]]:
    h = results["history"]
    lists, notes = _list_rows(h["lists"])
    scale = at_scale(h["postgres"], h["lists"]["data"]["bytes_per_row"], h["redis"]["requests"])
    h["postgres"]["bytes_per_request_at_scale"] = round(scale, 1)
    return _redis_rows(h["redis"]) + _pg_rows(h["postgres"], h["writer"], h["lag"], scale) + lists, notes
