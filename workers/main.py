"""The worker process: an arq worker (retries, scheduled work) plus the inbox consumer."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func

from gateway import logs, netguard
from gateway.settings import Settings
from gateway.state import make_delivery_store, make_redis, make_store
from gateway.store.delivery import OPERATOR_EVENT_JOB
from workers.consumer import run_consumer
from workers.context import WorkerContext
from workers.delivery import DELIVER_JOB, deliver_job, job_timeout
from workers.fanout import operator_event_job
from workers.sweeps import run_sweeps

log = logs.get("workers.main")


def queue_name(settings: Settings) -> str:
    return f"{settings.GATEWAY_KEY_PREFIX}queue"


def build_worker(settings: Settings) -> Worker:
    async def startup(ctx: dict[str, Any]) -> None:
        redis = make_redis(settings)
        store = make_store(settings, redis)
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
            deliveries=make_delivery_store(settings, redis),
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

    return Worker(
        functions=[
            func(deliver_job, name=DELIVER_JOB, timeout=job_timeout(settings)),
            func(operator_event_job, name=OPERATOR_EVENT_JOB, timeout=job_timeout(settings)),
        ],
        redis_settings=RedisSettings.from_dsn(settings.REDIS_URL),
        queue_name=queue_name(settings),
        on_startup=startup,
        on_shutdown=shutdown,
        poll_delay=settings.WORKER_POLL_DELAY,
        max_jobs=settings.WORKER_CONCURRENCY,
        handle_signals=False,
        keep_result=60,
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


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM when on the main thread)."""
    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    worker = build_worker(settings)
    main = asyncio.create_task(worker.async_run())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    # Order matters: finish the callbacks in flight, stop taking arq jobs, then close.
    await stop_consumer(worker.ctx)
    main.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await main
    await worker.close()
