"""Phases 1 and 2: ingest throughput and latency, and the two baselines under the same server.

Ingest is measured with no worker running (the receiver alone on the machine); a callback
counts as stored when its inbox entry exists, read as the inbox's length before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from gateway.store.keys import Keys
from tooling.bench import corpus, load, procs
from tooling.bench.context import Run
from tooling.bench.report import Stats, fmt, latency_cells
from tooling.embedded_redis import free_port

# Sign enough distinct callbacks for this many per second; beyond it wrk replays (then reported).
CORPUS_RATE = 25_000


def _inbox_len(run: Run) -> int | None:
    if run.redis_url is None or not run.local:
        return None  # a running stack's worker drains the inbox: its length says nothing
    client = redis.Redis.from_url(run.redis_url)
    try:
        return int(client.xlen(Keys(run.prefix).inbox))  # type: ignore[arg-type]
    finally:
        client.close()


def _warmup(run: Run, port: int) -> None:
    o = run.opts
    if o.warmup > 0:
        load.closed_loop(
            run.workdir / "warmup.corpus",
            port,
            connections=o.concurrency,
            duration=o.warmup,
            procs=o.load_processes,
            force_python=o.force_python_load,
        )


def _saturate(run: Run, path: Path, port: int) -> Stats:
    o = run.opts
    return load.closed_loop(
        path,
        port,
        connections=o.concurrency,
        duration=o.duration,
        procs=o.load_processes,
        force_python=o.force_python_load,
    )


def _row(name: str, stats: Stats) -> tuple[str, str, str]:
    return (
        name,
        fmt(stats.rate, "/s"),
        latency_cells({"p50": stats.p50, "p95": stats.p95, "p99": stats.p99}),
    )


def ingest(run: Run) -> None:
    o = run.opts
    run.corpus("warmup", corpus.fresh_ids(max(1000, int(o.warmup * CORPUS_RATE))))
    size = max(1000, int(o.duration * CORPUS_RATE))
    path = run.corpus("ingest", corpus.fresh_ids(size))
    _warmup(run, run.gateway_port)
    before = _inbox_len(run)
    sat = _saturate(run, path, run.gateway_port)
    after = _inbox_len(run)
    stored = None if before is None or after is None else after - before
    entry: dict[str, Any] = {"concurrency": o.concurrency, "duration": o.duration, **sat.as_dict()}
    entry["stored"] = stored
    entry["distinct_callbacks"] = size
    if sat.requests > size:
        run.notes.append(
            f"ingest sent {sat.requests:,} requests but signed {size:,}: the rest were duplicates"
        )
    run.results["ingest"] = entry
    run.rows.append(_row(f"ingest, V3-signed, stored, c={o.concurrency}", sat))
    if sat.failed:
        run.notes.append(f"ingest: {sat.failed:,} requests failed or were not 2xx")
    fixed_path = run.corpus("fixed", corpus.fresh_ids(int(o.fixed_rate * o.fixed_duration)))
    fixed, _ = load.open_loop(
        fixed_path, run.gateway_port, rate=o.fixed_rate, duration=o.fixed_duration, procs=1
    )
    run.results["ingest_fixed_rate"] = {"rate_target": o.fixed_rate, **fixed.as_dict()}
    run.rows.append(
        (
            f"ingest ack latency at {o.fixed_rate:,}/s",
            fmt(fixed.rate, "/s"),
            latency_cells({"p50": fixed.p50, "p95": fixed.p95, "p99": fixed.p99}),
        )
    )


def baselines(run: Run) -> None:
    """The same load against a bare FastAPI endpoint and one doing a single EVALSHA."""
    o = run.opts
    path = run.workdir / "ingest.corpus"
    if not path.exists():
        path = run.corpus("ingest", corpus.fresh_ids(max(1000, int(o.duration * CORPUS_RATE))))
    if not (run.workdir / "warmup.corpus").exists():
        run.corpus("warmup", corpus.fresh_ids(1000))
    env = {**run.env, "REDIS_URL": run.redis_url or run.env.get("REDIS_URL", "")}
    for name, factory in (
        ("bare", "tooling.bench.apps:bare_app"),
        ("evalsha", "tooling.bench.apps:evalsha_app"),
    ):
        port = free_port()
        proc = procs.serve(run.children, f"baseline-{name}", factory, port, o.server_workers, env)
        try:
            _warmup(run, port)
            stats = _saturate(run, path, port)
        finally:
            run.children.stop(proc)
        run.results[f"baseline_{name}"] = stats.as_dict()
        label = "bare FastAPI POST, 200" if name == "bare" else "FastAPI POST + one EVALSHA"
        run.rows.append(_row(f"baseline: {label}, c={o.concurrency}", stats))
    _ratios(run)


def _ratios(run: Run) -> None:
    ing = run.results.get("ingest")
    if not ing:
        return
    for name in ("bare", "evalsha"):
        base = run.results.get(f"baseline_{name}")
        if base and base["rate"]:
            ratio = ing["rate"] / base["rate"]
            run.results[f"ingest_vs_{name}"] = round(ratio, 3)
            run.rows.append((f"ingest / {name} baseline", f"{ratio:.2f}x", "same server settings, same run"))
