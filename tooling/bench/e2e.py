"""Phases 3 and 4: callback -> webhook / queue job latency, and webhook deliveries per second.

Requests are written straight into the stack's Redis (the submit script, pipelined) with one
target: the bench's subscriber in a first run, a queue served by the bench's arq job sink in a
second. Callbacks are then sent at a fixed rate through the real receiver; each one's latency is
from the moment its request was scheduled to be written to the socket (wall clock) to when the
subscriber got the webhook / the job started.
For throughput, callbacks go straight into the inbox in one burst and the figure is how fast one
worker process turns them into webhooks the subscriber received (correlate + emit + POST), with
its CPU time per delivery. Its baseline, measured right after on the same machine against the same
subscriber, is a bare aiohttp client POSTing the same webhooks (``bareclient``): the worker's
figure is reported as a fraction of it, which survives a slower or busier host.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from gateway.store.archive import ArchiveStore
from gateway.store.keys import Keys
from tooling.bench import bareclient, corpus, load, procs
from tooling.bench.apps import ENQUEUED_HASH, JOBS_HASH
from tooling.bench.bulk import inbox_entry, new_request, push_inbox, save_requests, settings_for
from tooling.bench.context import Run
from tooling.bench.report import fmt, latency_cells, summarize

SINK_FUNCTION = "bench_job"
SETTLE_S = 30.0
DRAIN_S = 10.0
LAG_SAMPLE_S = 0.05


def _targets(run: Run, with_queue: bool) -> list[dict[str, Any]]:
    hook = run.env["BENCH_SUBSCRIBER_URL"] + "/hook"
    targets: list[dict[str, Any]] = [{"type": "webhook", "url": hook}]
    if with_queue:
        targets.append({"type": "queue", "queue": run.env["BENCH_SINK_QUEUE"], "function": SINK_FUNCTION})
    return targets


async def _stats(run: Run) -> tuple[int, dict[str, float], int]:
    """What the subscriber received: how many, when each event first arrived, the body bytes."""
    async with httpx.AsyncClient(timeout=30) as client:
        data = (await client.get(run.env["BENCH_SUBSCRIBER_URL"] + "/_stats")).json()
    return int(data["count"]), {k: float(v) for k, v in data["times"].items()}, int(data["bytes"])


async def _count(run: Run) -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        data = (await client.get(run.env["BENCH_SUBSCRIBER_URL"] + "/_stats?count")).json()
    return int(data["count"])


async def _reset_subscriber(run: Run) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        await client.delete(run.env["BENCH_SUBSCRIBER_URL"] + "/_stats")


async def _jobs_count(redis: Redis) -> int:
    count: int = await redis.hlen(JOBS_HASH)  # type: ignore[misc]
    return count


async def _wait_for(run: Run, redis: Redis, count: int, jobs: bool, hooks: bool = True) -> None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        got = await _count(run) if hooks else count
        done_jobs = await _jobs_count(redis) if jobs else count
        if got >= count and done_jobs >= count:
            return
        await asyncio.sleep(0.2)


def _latencies(ids: list[str], sends: dict[int, float], times: dict[str, float]) -> list[float]:
    return [(times[a] - sends[i]) * 1000 for i, a in enumerate(ids) if i in sends and a in times]


async def _e2e_run(run: Run, redis: Redis, kind: str) -> dict[str, Any]:
    """Callbacks at the fixed rate for requests with one ``kind`` target (webhook or queue);
    latency from each callback's scheduled send to the webhook received / the job started."""
    o = run.opts
    assert run.redis_url is not None
    ids = corpus.fresh_ids(int(o.e2e_rate * o.e2e_duration))
    targets = _targets(run, True)[1:] if kind == "queue" else _targets(run, False)
    reqs = [new_request(a, targets, o.metadata_bytes, 3600) for a in ids]
    await save_requests(redis, settings_for(run.redis_url, run.prefix), reqs)
    await redis.delete(JOBS_HASH, ENQUEUED_HASH)
    await _reset_subscriber(run)
    path = run.corpus(f"e2e-{kind}", ids)
    lag: list[float] = []
    sampling = asyncio.create_task(_outbox_lag(ArchiveStore(redis, run.prefix), lag))
    try:
        stats, sends = await asyncio.to_thread(
            load.open_loop, path, run.gateway_port, rate=o.e2e_rate, duration=o.e2e_duration, procs=1
        )
        queue = kind == "queue"
        await _wait_for(run, redis, len(ids), jobs=queue, hooks=not queue)
        drained = await _archived(redis, Keys(run.prefix).archive, SETTLE_S)
    finally:
        sampling.cancel()
    enqueued: dict[str, float] = {}
    if queue:
        raw: dict[str, str] = await redis.hgetall(JOBS_HASH)  # type: ignore[misc]
        arrived = {k: float(v) for k, v in raw.items()}
        raw = await redis.hgetall(ENQUEUED_HASH)  # type: ignore[misc]
        enqueued = {k: float(v) for k, v in raw.items()}
    else:
        _, arrived, _ = await _stats(run)
    return {
        "callbacks": len(ids),
        "arrived": len(arrived),
        "ingest": stats.as_dict(),
        "ms": summarize(_latencies(ids, sends, arrived)),
        "enqueued_ms": summarize(_latencies(ids, sends, enqueued)),
        "outbox_lag_ms": summarize(lag),
        "outbox_drained": drained,
    }


async def _outbox_lag(archive: ArchiveStore, samples: list[float]) -> None:
    """How long the oldest change has waited for the history writer, every LAG_SAMPLE_S (0 when
    none waits), until cancelled."""
    while True:
        samples.append(float(await archive.oldest_age_ms() or 0))
        await asyncio.sleep(LAG_SAMPLE_S)


async def _e2e(run: Run, redis: Redis) -> None:
    """One run with a webhook target per request, then one with a queue target: each figure is
    measured with only its own kind of delivery on the machine."""
    o = run.opts
    webhook = await _e2e_run(run, redis, "webhook")
    job = await _e2e_run(run, redis, "queue")
    run.results["e2e"] = {
        "rate": o.e2e_rate,
        "callbacks": webhook["callbacks"],
        "ingest": webhook["ingest"],
        "webhooks_received": webhook["arrived"],
        "jobs_started": job["arrived"],
        "webhook_ms": webhook["ms"],
        "queue_job_ms": job["ms"],
        "queue_enqueued_ms": job["enqueued_ms"],
        "queue_run": {"callbacks": job["callbacks"], "ingest": job["ingest"]},
        "outbox_lag_ms": webhook["outbox_lag_ms"],
        "outbox_drained": webhook["outbox_drained"],
    }
    for label, res in (
        (f"e2e callback -> webhook at {o.e2e_rate}/s", webhook),
        (f"e2e callback -> arq job started at {o.e2e_rate}/s", job),
    ):
        run.rows.append((label, f"{res['arrived']:,}/{res['callbacks']:,}", latency_cells(res["ms"])))
        if res["arrived"] < res["callbacks"]:
            run.notes.append(f"{label}: {res['callbacks'] - res['arrived']} missing after {SETTLE_S:.0f}s")
    lag = webhook["outbox_lag_ms"]
    run.rows.append(
        (
            f"e2e history outbox lag at {o.e2e_rate}/s",
            f"p50 {lag['p50']:,.0f} / p99 {lag['p99']:,.0f} ms",
            f"the oldest change's wait for the writer, every {LAG_SAMPLE_S * 1000:.0f} ms from the"
            " first callback until the archive was empty; GATEWAY_HISTORY_DELAY (0.5 s) included"
            + ("" if webhook["outbox_drained"] else f"; NOT drained {SETTLE_S:.0f} s after the webhooks"),
        )
    )
    run.rows.append(
        (
            f"e2e callback -> arq job enqueued at {o.e2e_rate}/s",
            f"{job['arrived']:,}/{job['callbacks']:,}",
            latency_cells(job["enqueued_ms"]),
        )
    )


async def _drained(redis: Redis, inbox: str) -> None:
    """Until the worker has acknowledged (and so deleted) every inbox entry: its last records
    written, not only its last webhooks received."""
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        if not await redis.xlen(inbox):
            return
        await asyncio.sleep(0.05)


async def _archived(redis: Redis, archive: str, within: float = DRAIN_S) -> bool:
    """Until the history writers have copied everything the run changed (bounded): whether they had."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not await redis.zcard(archive):
            return True
        await asyncio.sleep(0.05)
    return False


async def _worker_run(run: Run, redis: Redis) -> tuple[dict[str, Any], float | None]:
    """A burst of callbacks pushed straight into the inbox: how fast the worker turned them into
    webhooks the subscriber received, and the CPU seconds its processes used from the push until the
    inbox was drained (None when the worker is not the bench's own)."""
    o = run.opts
    assert run.redis_url is not None
    ids = corpus.fresh_ids(o.deliveries)
    reqs = [new_request(a, _targets(run, False), o.metadata_bytes, 3600) for a in ids]
    await save_requests(redis, settings_for(run.redis_url, run.prefix), reqs)
    entries = [inbox_entry(corpus.payload(a)) for a in ids]
    await _reset_subscriber(run)
    pids = run.children.pids("worker")
    writers = procs.children(pids, "workers.writer")
    cpu_before = procs.cpu_seconds(pids)
    writer_before = procs.cpu_seconds(writers)
    redis_before, calls_before = await _redis_cpu(redis), await _redis_calls(redis)
    began = time.time()
    await push_inbox(redis, Keys(run.prefix).inbox, entries)
    pushed = time.time() - began
    await _wait_for(run, redis, len(ids), jobs=False)
    count, times, body_bytes = await _stats(run)
    cpu = None
    await _drained(redis, Keys(run.prefix).inbox)
    redis_hot = await _redis_cpu(redis) - redis_before
    calls_hot = await _redis_calls(redis)
    if cpu_before is not None:
        cpu_after = procs.cpu_seconds(pids)
        cpu = None if cpu_after is None else cpu_after - cpu_before
    writer_cpu = None
    if writer_before is not None:
        await _archived(redis, Keys(run.prefix).archive)
        writer_after = procs.cpu_seconds(writers)
        writer_cpu = None if writer_after is None else writer_after - writer_before
    redis_all = await _redis_cpu(redis) - redis_before
    calls_all = await _redis_calls(redis)
    last = max(times.values(), default=began)
    elapsed = max(last - began, 1e-9)
    workers = len(pids) or int(run.env.get("BENCH_WORKER_PROCS", "1"))
    rate = len(times) / elapsed
    return {
        "callbacks": len(ids),
        "delivered": len(times),
        "elapsed_s": round(elapsed, 3),
        "inbox_push_s": round(pushed, 3),
        "worker_processes": workers,
        "deliveries_per_s": round(rate, 1),
        "per_worker_process": round(rate / workers, 1),
        "body_bytes": round(body_bytes / max(count, 1), 1),
        # Redis' own CPU (INFO cpu) from the push: until the inbox was drained, then until the
        # history writers had copied the run as well (the bench's INFO calls included, a few).
        "redis_cpu_us_per_delivery": round(redis_hot * 1e6 / max(len(times), 1), 1),
        "redis_cpu_us_per_delivery_with_history": round(redis_all * 1e6 / max(len(times), 1), 1),
        # The same windows' commands (the push's XADDs and the bench's INFO calls included).
        "redis_commands_per_delivery": _per(calls_hot, calls_before, len(times)),
        "redis_commands_per_delivery_with_history": _per(calls_all, calls_before, len(times)),
        **(
            {"writer_cpu_us_per_delivery": round(writer_cpu * 1e6 / len(times), 1)}
            if writer_cpu and times
            else {}
        ),
    }, cpu


async def _redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _redis_calls(redis: Redis) -> dict[str, int]:
    """Commands Redis has run, by name (INFO commandstats; a script's own calls counted too)."""
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def _per(after: dict[str, int], before: dict[str, int], count: int) -> dict[str, float]:
    """Commands per ``count`` between two _redis_calls, the most frequent first."""
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    return {k: round(v / max(count, 1), 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1])}


async def _bare_client(run: Run, count: int) -> dict[str, Any]:
    """The delivery baseline (``tooling.bench.bareclient``) against the same subscriber, its
    counters reset before and after so that neither run counts the other's requests."""
    url = run.env["BENCH_SUBSCRIBER_URL"] + "/hook"
    limit = bareclient.concurrency(run.env)
    await _reset_subscriber(run)
    try:
        result = await asyncio.to_thread(
            bareclient.run, run.children, url, count, limit, run.opts.metadata_bytes
        )
        received, _, body_bytes = await _stats(run)
    finally:
        await _reset_subscriber(run)
    result["body_bytes"] = round(body_bytes / max(received, 1), 1)
    return result


def _merge_bare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Bare-client runs taken together: their requests over their time, their CPU over their
    requests."""
    ok, failed = sum(r["ok"] for r in runs), sum(r["failed"] for r in runs)
    elapsed = sum(r["elapsed_s"] for r in runs)
    cpu = sum(r["cpu_us_per_request"] * r["requests"] for r in runs) / 1e6
    merged = bareclient.summary(ok, failed, elapsed, cpu, runs[0]["concurrency"], runs[0]["body_bytes"])
    merged["runs_per_s"] = [r["per_s"] for r in runs]
    return merged


async def _delivery(run: Run, redis: Redis) -> None:
    # The baseline runs just before and just after the worker, half the count each: a change in
    # the host's load during the phase weighs on both figures alike.
    half = max(1, run.opts.deliveries // 2)
    before = await _bare_client(run, half)
    res, cpu = await _worker_run(run, redis)
    bare = _merge_bare([before, await _bare_client(run, half)])
    res["bare_client"] = bare
    res["bare_client_per_s"] = bare["per_s"]
    res["ratio_to_bare_client"] = (
        round(res["per_worker_process"] / bare["per_s"], 3) if bare["per_s"] else 0.0
    )
    if cpu is not None and res["delivered"]:
        per = cpu * 1e6 / res["delivered"]
        res["worker_cpu_us_per_delivery"] = round(per, 1)
        # What one worker process does with a core to itself: the measured rate also waits for
        # the CPU the subscriber, Redis and this bench take from the same two cores.
        res["cpu_bound_per_worker_process"] = round(1e6 / per, 1)
        if bare["cpu_us_per_request"]:
            res["cpu_ratio_to_bare_client"] = round(per / bare["cpu_us_per_request"], 2)
    run.results["delivery"] = res
    _delivery_rows(run, res)


def _delivery_rows(run: Run, res: dict[str, Any]) -> None:
    bare = res["bare_client"]
    run.rows.append(
        (
            f"webhook deliveries/s per worker process ({res['worker_processes']} running)",
            fmt(res["per_worker_process"], "/s"),
            f"{res['delivered']:,} of {res['callbacks']:,} in {res['elapsed_s']:.2f}s, incl. correlate"
            f" + emit = {res['ratio_to_bare_client']:.2f} of a bare aiohttp client's {bare['per_s']:,.0f}/s",
        )
    )
    run.rows.append(
        (
            f"baseline: bare aiohttp POST to the subscriber, c={bare['concurrency']}",
            fmt(bare["per_s"], "/s"),
            f"{bare['ok']:,} of {bare['requests']:,} in {bare['elapsed_s']:.2f}s (half before, half after"
            f" the worker: {' and '.join(f'{r:,.0f}/s' for r in bare['runs_per_s'])}), 1 process,"
            f" uvloop, no Redis; CPU {bare['cpu_us_per_request']:,.0f} µs/request",
        )
    )
    if "writer_cpu_us_per_delivery" in res:
        run.rows.append(
            (
                "history writer CPU per delivery",
                f"{res['writer_cpu_us_per_delivery']:,.0f} µs",
                "utime + stime of the workers' history writer children (GATEWAY_HISTORY_WRITER=process),"
                " from the push until everything was copied to PostgreSQL",
            )
        )
    hot, everything = res["redis_commands_per_delivery"], res["redis_commands_per_delivery_with_history"]
    top = ", ".join(f"{k} {v:g}" for k, v in list(everything.items())[:8])
    run.rows.append(
        (
            "Redis CPU per delivery",
            f"{res['redis_cpu_us_per_delivery']:,.0f} µs",
            "INFO cpu from the push until the inbox drained;"
            f" {res['redis_cpu_us_per_delivery_with_history']:,.0f} µs until the history writers had"
            " copied the run too",
        )
    )
    run.rows.append(
        (
            "Redis commands per delivery",
            f"{sum(hot.values()):,.1f}",
            f"INFO commandstats calls (scripts and their own calls), same windows; with history"
            f" {sum(everything.values()):,.1f}: {top}",
        )
    )
    if "worker_cpu_us_per_delivery" in res:
        procs_n = res["worker_processes"]
        ratio = res.get("cpu_ratio_to_bare_client")
        run.rows.append(
            (
                "worker CPU per delivery",
                f"{res['worker_cpu_us_per_delivery']:,.0f} µs",
                f"utime + stime of {procs_n} worker process(es), from the push until the inbox drained"
                + (f"; {ratio:.2f}x the bare client's CPU per request" if ratio else ""),
            )
        )
        run.rows.append(
            (
                "deliveries/s per worker process, CPU-bound (1 s / CPU per delivery)",
                fmt(res["cpu_bound_per_worker_process"], "/s"),
                f"with a core to itself; the measured rate above shares {os.cpu_count()} cores with"
                " the subscriber, Redis and the bench",
            )
        )
    else:
        run.notes.append("worker CPU per delivery left out: the worker is not one this bench started")
    if bare["failed"]:
        run.notes.append(f"bare client: {bare['failed']:,} requests failed")
    if bare["body_bytes"] != res["body_bytes"]:
        run.notes.append(
            f"webhook bodies differ: worker {res['body_bytes']} B,"
            f" bare client {bare['body_bytes']} B on average"
        )


async def run_phases(run: Run, e2e: bool, delivery: bool) -> None:
    assert run.redis_url is not None
    redis = Redis.from_url(run.redis_url, decode_responses=True)
    try:
        if e2e:
            await _e2e(run, redis)
        if delivery:
            await _delivery(run, redis)
    finally:
        await redis.aclose()
