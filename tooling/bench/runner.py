"""The order of a bench run: start (or target) the stack, run the phases, report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from gateway.store.keys import Keys
from tooling.bench import e2e, history, ingest, memory, procs, report
from tooling.bench.context import Run
from tooling.bench.load import generator_name
from tooling.bench.options import BenchOptions, check
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis, free_port
from workers import writer

PREFIX = "cg:"


def _env(redis_url: str, database_url: str, port: int, token: str, opts: BenchOptions) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "GATEWAY_KEY_PREFIX": PREFIX,
        "PLIVO_AUTH_ID": "MABENCH0000000000000",
        "PLIVO_AUTH_TOKEN": token,
        "PLIVO_API_URL": "http://127.0.0.1:9",  # never called: bench writes requests itself
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_API_KEYS": "cgk_" + secrets.token_urlsafe(24),
        "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": opts.log_level,
        "BENCH_SINK_QUEUE": f"bench:sink:{secrets.token_hex(3)}",
    }


@contextlib.contextmanager
def _stack(opts: BenchOptions, workdir: Path) -> Iterator[Run]:
    """A Run whose gateway is up: started here, or the one at ``--url``."""
    with contextlib.ExitStack() as stack:
        children = stack.enter_context(procs.Children(workdir))
        own_redis: EmbeddedRedis | None = None
        if opts.url is None or opts.redis_url is None:
            own_redis = stack.enter_context(EmbeddedRedis())
        # The workers the bench starts keep history too: in DATABASE_URL's PostgreSQL, else their own,
        # at the writer's lower CPU priority: history is background work, and a PostgreSQL on the
        # gateway's own cores stands in for one on a host of its own (docs/performance.md).
        database_url = (
            os.environ.get("DATABASE_URL") or stack.enter_context(EmbeddedPostgres(nice=writer.NICE)).url()
        )
        if opts.url is None:
            assert own_redis is not None
            port, token = free_port(), secrets.token_urlsafe(30)
            env = _env(own_redis.url, database_url, port, token, opts)
            procs.serve(children, "gateway", procs.GATEWAY_FACTORY, port, opts.server_workers, env)
            yield Run(
                opts,
                workdir,
                children,
                port,
                env["GATEWAY_PUBLIC_URL"],
                token,
                own_redis.url,
                PREFIX,
                env,
                generator_name(opts.force_python_load),
                local=True,
            )
            return
        port = urlsplit(opts.url).port or 80
        redis_url = opts.redis_url or (own_redis.url if own_redis else "")
        env = _env(redis_url, database_url, port, opts.auth_token or "", opts)
        yield Run(
            opts,
            workdir,
            children,
            port,
            (opts.public_url or opts.url).rstrip("/"),
            opts.auth_token or "",
            opts.redis_url,
            opts.key_prefix,
            env,
            generator_name(opts.force_python_load),
            local=False,
        )


def _wait(predicate: Any, what: str, run: Run, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if predicate():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{run.children.log_tail(name)}")


def _start_delivery_side(run: Run) -> None:
    """Subscriber and job sink (always ours); the worker too when bench started the stack."""
    assert run.redis_url is not None
    port = free_port()
    run.env["BENCH_SUBSCRIBER_URL"] = f"http://127.0.0.1:{port}"
    procs.serve(run.children, "subscriber", "tooling.bench.apps:subscriber_app", port, 1, run.env)
    client = redis.Redis.from_url(run.redis_url, decode_responses=True)
    try:
        sink = "from tooling.bench.apps import run_job_sink; run_job_sink()"
        run.children.spawn("jobsink", ["-c", sink], run.env)
        health = run.env["BENCH_SINK_QUEUE"] + ":health-check"
        _wait(lambda: client.exists(health), "the arq job sink", run, "jobsink")
        if not run.local:
            return
        client.flushall()  # the ingest phase's callbacks match nothing: don't make the worker park them
        run.env["BENCH_WORKER_PROCS"] = "1"
        run.children.spawn("worker", ["-m", "gateway.cli", "worker"], run.env)
        inbox = Keys(run.prefix).inbox
        _wait(lambda: _consumers(client, inbox), "the worker", run, "worker")
    finally:
        client.close()


def _consumers(client: redis.Redis, inbox: str) -> bool:
    """A worker is reading the inbox (Redis 7.0 lists a consumer only once it got an entry)."""
    clients: list[dict[str, Any]] = client.client_list()  # type: ignore[assignment]
    if any(c.get("cmd") == "xreadgroup" for c in clients):
        return True
    groups: list[dict[str, Any]] = client.xinfo_groups(inbox)  # type: ignore[assignment]
    return any(g["consumers"] for g in groups)


def _phases(run: Run) -> None:
    o = run.opts
    if "ingest" in o.phases:
        ingest.ingest(run)
    if "baselines" in o.phases:
        ingest.baselines(run)
    wants = {"e2e", "delivery"} & set(o.phases)
    if wants and run.redis_url is None:
        run.notes.append("e2e and delivery skipped: they need --redis-url of the stack under --url")
    elif wants:
        _start_delivery_side(run)
        asyncio.run(e2e.run_phases(run, "e2e" in wants, "delivery" in wants))
    if "memory" in o.phases:
        run.results.update(asyncio.run(memory.run(o)))
        _memory_rows(run)
    if "history" in o.phases:
        run.results.update(history.run(o, run.workdir))
        rows, notes = history.rows(run.results)
        run.rows += rows
        run.notes += notes


def _memory_rows(run: Run) -> None:
    mem, defaults = run.results["memory"], run.results["memory_redis_defaults"]
    note = f"{mem['pending']:,} pending, {mem['metadata_bytes']} B metadata, INFO used_memory delta"
    run.rows.append(("Redis bytes per pending request", report.fmt(mem["bytes_per_request"], " B"), note))
    run.rows.append(
        (
            "  same, Redis's default hash limits",
            report.fmt(defaults["bytes_per_request"], " B"),
            "what-if: without deploy/redis.conf's hash-max-listpack-*",
        )
    )
    for key in ("sweep", "sweep_small"):
        s = run.results[key]
        run.rows.append(
            (
                f"timeout sweep, {s['due']:,} due of {s['pending']:,} pending",
                f"{s['client_ms']:.1f} ms",
                f"Redis server time {s['server_ms']:.1f} ms; {s['method']}",
            )
        )


def run(opts: BenchOptions) -> dict[str, Any]:
    """Run the bench; print the table; return (and optionally write) the JSON report."""
    opts = check(opts)
    began = time.monotonic()
    facts = report.machine_facts(opts.server_workers, generator_name(opts.force_python_load))
    print("machine: " + report.facts_text(facts), flush=True)
    with tempfile.TemporaryDirectory(prefix="cg-bench-") as tmp, _stack(opts, Path(tmp)) as bench:
        _phases(bench)
        rows, notes, results = bench.rows, bench.notes + opts.notes, bench.results
    out: dict[str, Any] = {"machine": facts, "options": _options(opts), "results": results, "notes": notes}
    out["elapsed_s"] = round(time.monotonic() - began, 1)
    print(report.table(rows))
    for note in notes:
        print(f"note: {note}")
    if opts.json_path:
        report.write_json(opts.json_path, out)
    return out


def _options(opts: BenchOptions) -> dict[str, Any]:
    hidden = {"auth_token", "notes"}
    return {k: getattr(opts, k) for k in opts.__dataclass_fields__ if k not in hidden}
