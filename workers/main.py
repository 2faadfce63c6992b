"""The worker process: an arq worker (retries, scheduled work) plus the inbox consumer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import threading
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.exceptions import RedisError

from gateway import logs, metrics, netguard
from gateway.redis_batch import BatchingRedis
from gateway.settings import Settings
from gateway.state import make_delivery_store, make_redis, make_store, sentinel_hosts
from gateway.store.delivery import OPERATOR_EVENT_JOB
from workers.consumer import consumer_name, run_consumer
from workers.context import WorkerContext
from workers.delivery import DELIVER_JOB, deliver_job, job_timeout
from workers.fanout import operator_event_job
from workers.heartbeat import run_heartbeat
from workers.sweeps import run_sweeps

log = logs.get("workers.main")


def queue_name(settings: Settings) -> str:
    return f"{settings.GATEWAY_KEY_PREFIX}queue"


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection: REDIS_URL, or the sentinels' master when REDIS_SENTINELS is set."""
    base = RedisSettings.from_dsn(settings.REDIS_URL)
    hosts = sentinel_hosts(settings)
    if not hosts:
        return base
    master = settings.REDIS_SENTINEL_MASTER
    return dataclasses.replace(base, host=hosts, sentinel=True, sentinel_master=master)


class ResilientWorker(Worker):
    """arq's worker, but a Redis error in its poll loop (a failover, a restart) is waited out
    instead of ending the worker: arq itself lets it escape and stop the whole process."""

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except (RedisError, OSError) as exc:
            log.warning("arq_poll_unavailable", error=type(exc).__name__)
            await asyncio.sleep(0.5)


def build_worker(settings: Settings) -> Worker:
    async def startup(ctx: dict[str, Any]) -> None:
        redis = make_redis(settings)
        # The stores' scripts, called by many entries at once, share pipelines (gateway.redis_batch).
        batched = BatchingRedis(redis)
        store = make_store(settings, batched)
        configured = settings.GATEWAY_WEBHOOK_SECRET
        secret = await store.webhook_secret(configured.get_secret_value() if configured else None)
        policy = netguard.Policy.build(
            allow_private=settings.GATEWAY_ALLOW_PRIVATE_WEBHOOKS,
            allow_cidrs=settings.GATEWAY_WEBHOOK_ALLOW_CIDRS,
        )
        http = netguard.webhook_client(
            policy, timeout=settings.GATEWAY_DELIVERY_TIMEOUT, max_connections=settings.WORKER_CONCURRENCY
        )
        wctx = WorkerContext(
            settings=settings,
            redis=redis,
            store=store,
            deliveries=make_delivery_store(settings, batched),
            arq=ctx["redis"],
            http=http,
            webhook_secret=secret,
            queue_name=queue_name(settings),
        )
        ctx["gw"] = wctx
        ctx["stop"] = stop = asyncio.Event()
        ctx["consumer"] = asyncio.create_task(run_consumer(wctx, stop))
        ctx["sweeps"] = asyncio.create_task(run_sweeps(wctx, stop))
        log.info("worker_started", queue=wctx.queue_name)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await stop_consumer(ctx)
        wctx: WorkerContext | None = ctx.get("gw")
        if wctx is None:  # stopped before startup finished
            return
        await wctx.http.aclose()
        await wctx.redis.aclose()

    return ResilientWorker(
        functions=[
            func(deliver_job, name=DELIVER_JOB, timeout=job_timeout(settings)),
            func(operator_event_job, name=OPERATOR_EVENT_JOB, timeout=job_timeout(settings)),
        ],
        redis_settings=arq_redis_settings(settings),
        queue_name=queue_name(settings),
        on_startup=startup,
        on_shutdown=shutdown,
        poll_delay=settings.WORKER_POLL_DELAY,
        max_jobs=settings.WORKER_CONCURRENCY,
        handle_signals=False,
        # Nobody reads our jobs' results (a job's effect is in the delivery record, and job ids are
        # unique per attempt): storing them cost ~1.2 KB of Redis per retry for a minute.
        keep_result=0,
    )


async def stop_consumer(ctx: dict[str, Any], grace: float = 10.0) -> None:
    """Stop reading new callbacks and sweeping; let the batch in flight finish (bounded)."""
    stop: asyncio.Event | None = ctx.get("stop")
    if stop is None:
        return
    stop.set()
    for name in ("consumer", "sweeps"):
        task: asyncio.Task[None] | None = ctx.get(name)
        if task is None:
            continue
        try:
            await asyncio.wait_for(task, grace)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def finish_jobs(worker: Worker, grace: float) -> int:
    """Wait (at most ``grace`` s) for the arq jobs in flight; returns how many were still running.

    Those are cancelled by ``worker.close()``: their arq job stays queued and their lease expires,
    so another worker runs the attempt again (webhook-id unchanged, receivers deduplicate)."""
    running = [t for t in worker.tasks.values() if not t.done()]
    if not running:
        return 0
    _, still = await asyncio.wait(running, timeout=grace)
    return len(still)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM when on the main thread).

    Shutdown: stop taking new work (the arq poll loop and the inbox reads stop at once), let what
    is in flight finish within WORKER_SHUTDOWN_GRACE, then close. Nothing unfinished was
    acknowledged, so whatever the grace cut off is retried by another worker."""
    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    if settings.WORKER_METRICS_PORT:
        metrics.serve_worker_metrics(settings.WORKER_METRICS_PORT)
    beat_redis, beat_stop = make_redis(settings), asyncio.Event()
    beat = asyncio.create_task(run_heartbeat(beat_redis, settings, consumer_name(), beat_stop))
    worker = build_worker(settings)
    main = asyncio.create_task(worker.async_run())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    grace = settings.WORKER_SHUTDOWN_GRACE
    log.info("worker_stopping", grace_s=grace, jobs_in_flight=len(worker.tasks))
    # Order matters: no new arq jobs (the poll loop ends; running jobs are their own tasks),
    # no new callbacks, then wait for both kinds of work in flight under one deadline.
    main.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await main
    _, cut = await asyncio.gather(stop_consumer(worker.ctx, grace), finish_jobs(worker, grace))
    try:
        await worker.close()
    except (RedisError, OSError) as exc:
        # Redis went away first: arq's close gives up before its shutdown hook; close ours.
        log.warning("worker_close_unavailable", error=type(exc).__name__)
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
    beat_stop.set()
    await beat
    await beat_redis.aclose()
    log.info("worker_stopped", jobs_cut_off=cut)
