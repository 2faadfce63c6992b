"""The worker process: an arq worker (retries, scheduled work) plus the inbox consumer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import threading
from collections.abc import Awaitable, Callable

from arq.connections import RedisSettings
from arq.worker import Worker, func
from redis.exceptions import AuthenticationError, RedisError

from gateway.history.client import HistoryClient
from gateway.infra import logs, metrics
from gateway.infra.redis_batch import BatchingRedis
from gateway.infra.redis_client import make_redis, sentinel_hosts
from gateway.services import netguard
from gateway.settings import Settings
from gateway.store import make_delivery_store, make_store
from gateway.store.delivery import OPERATOR_EVENT_JOB
from gateway.store.keys import Keys
from workers.archive import run_archiver_for
from workers.consumer import consumer_name, run_consumer
from workers.context import JobContext, WorkerContext
from workers.delivery import DELIVER_JOB, JOB_MAX_TRIES, SLOT_WAIT_S, deliver_job, job_timeout
from workers.fanout import operator_event_job
from workers.heartbeat import heartbeat
from workers.sweeps import run_sweeps
from workers.writer import WriterProcess

log = logs.get("workers.main")

# Longest pause between two attempts to reach Redis at start: a Redis started after the worker
# (compose and Kubernetes start order) is found within this many seconds of coming up.
REDIS_WAIT_MAX_S = 5.0


def queue_name(settings: Settings) -> str:
    return Keys(settings.GATEWAY_KEY_PREFIX).queue


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


def build_worker(
    settings: Settings,
    *,
    started: asyncio.Event | None = None,
    during_startup: Callable[[], Awaitable[None]] | None = None,
) -> Worker:
    """The arq worker. Its startup hook sets ``started`` once the consumer and sweeps run;
    ``during_startup`` is awaited inside that hook (see ``run_worker``)."""

    async def startup(ctx: JobContext) -> None:
        # Whatever this creates is closed again if the hook does not finish (an error), and by
        # ``shutdown`` otherwise.
        async with contextlib.AsyncExitStack() as resources:
            redis = make_redis(settings)
            resources.push_async_callback(redis.aclose)
            # The stores' scripts, called by many entries at once, share pipelines
            # (gateway.infra.redis_batch).
            batched = BatchingRedis(redis)
            store = make_store(settings, batched)
            configured = settings.GATEWAY_WEBHOOK_SECRET
            secret = await store.webhook_secret(configured.get_secret_value() if configured else None)
            policy = netguard.Policy.build(
                allow_private=settings.GATEWAY_ALLOW_PRIVATE_WEBHOOKS,
                allow_cidrs=settings.GATEWAY_WEBHOOK_ALLOW_CIDRS,
            )
            http = netguard.webhook_client(
                policy,
                timeout=settings.GATEWAY_DELIVERY_TIMEOUT,
                max_connections=settings.WORKER_CONCURRENCY,
                slot_wait=SLOT_WAIT_S,
            )
            resources.push_async_callback(http.aclose)
            history: HistoryClient | None = None
            if settings.GATEWAY_HISTORY_WRITER == "inline":
                history = HistoryClient(settings)
                history.start()
                resources.push_async_callback(history.close)
            else:
                writer = WriterProcess(settings)
                writer.start()
                resources.push_async_callback(writer.stop)
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
            if during_startup is not None:
                await during_startup()
            ctx["resources"] = resources.pop_all()
        ctx["gw"] = wctx
        ctx["stop"] = stop = asyncio.Event()
        ctx["consumer"] = asyncio.create_task(run_consumer(wctx, stop))
        ctx["sweeps"] = asyncio.create_task(run_sweeps(wctx, stop))
        if history is not None:  # inline (else the writer child runs it)
            ctx["archiver"] = asyncio.create_task(run_archiver_for(settings, redis, history, stop))
        log.info("worker_started", queue=wctx.queue_name)
        if started is not None:
            started.set()

    async def shutdown(ctx: JobContext) -> None:
        await stop_consumer(ctx)
        # Popped: the shutdown may run twice (``run_worker`` after a close that Redis cut short).
        resources: contextlib.AsyncExitStack | None = ctx.pop("resources", None)
        if resources is not None:  # None: startup never finished, and closed what it had opened
            await resources.aclose()

    timeout = job_timeout(settings)
    return ResilientWorker(
        functions=[
            func(deliver_job, name=DELIVER_JOB, timeout=timeout, max_tries=JOB_MAX_TRIES),
            func(operator_event_job, name=OPERATOR_EVENT_JOB, timeout=timeout, max_tries=JOB_MAX_TRIES),
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


async def stop_consumer(ctx: JobContext, grace: float = 10.0) -> None:
    """Stop reading new callbacks and sweeping; let the batch in flight finish (bounded)."""
    stop: asyncio.Event | None = ctx.get("stop")
    if stop is None:
        return
    stop.set()
    for name in ("consumer", "sweeps", "archiver"):
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


async def run_worker(
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    during_startup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM when on the main thread).

    Startup: arq connects, then its startup hook opens our clients and starts the inbox consumer
    and the sweeps. Only then does the heartbeat start, so /readyz never counts a worker that
    cannot work yet, nor one whose startup failed; once a stop has arrived it does not start at
    all. A stop that arrives during startup waits for startup to end (a handful of Redis
    commands; a Redis that does not answer would hold up the shutdown just the same) and then
    shuts the worker down the normal way. Startup is never cancelled: a cancellation midway would
    leave what it opened unclosed, and Python 3.11's ``asyncio.wait_for`` (round every redis-py
    command) can lose a cancellation that arrives as the command completes (docs/reliability.md).

    Shutdown: stop taking new work (the arq poll loop and the inbox reads stop at once), let what
    is in flight finish within WORKER_SHUTDOWN_GRACE, then close; the heartbeat leaves last.
    Nothing unfinished was acknowledged, so whatever the grace cut off is retried by another
    worker. An error that ended the worker (its startup failed) is raised once all is closed.

    ``during_startup`` is a seam for tests: awaited inside the startup hook once its clients
    exist and before the consumer starts, it holds startup open (or fails it) on purpose."""
    stop = stop or asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    _serve_metrics(settings.WORKER_METRICS_PORT)
    if not await wait_for_redis(settings, stop):
        log.info("worker_stopped", jobs_cut_off=0)
        return
    started = asyncio.Event()
    worker = build_worker(settings, started=started, during_startup=during_startup)
    main = asyncio.create_task(worker.async_run())
    await _until(main, started)  # a stop meanwhile waits for the startup's end
    if started.is_set() and not stop.is_set():
        async with heartbeat(settings, consumer_name()):
            await _until(main, stop)
            cut, error = await _shut_down(worker, main, settings.WORKER_SHUTDOWN_GRACE)
    else:
        cut, error = await _shut_down(worker, main, settings.WORKER_SHUTDOWN_GRACE)
    log.info("worker_stopped", jobs_cut_off=cut)
    if error is not None:
        raise error


def _serve_metrics(port: int) -> None:
    if not port:
        return
    try:
        metrics.serve_worker_metrics(port)
    except OSError as exc:  # the port is taken: say which setting chose it
        raise OSError(exc.errno, f"WORKER_METRICS_PORT {port}: {exc.strerror}") from exc


async def wait_for_redis(settings: Settings, stop: asyncio.Event) -> bool:
    """Wait until Redis answers (True) or ``stop`` is set (False), logging one
    ``redis_unavailable`` line per failed attempt, the pauses doubling up to REDIS_WAIT_MAX_S.

    Waiting, rather than exiting, because a worker often starts before its Redis (compose,
    Kubernetes) and is expected to wait it out, as it waits out an outage once running and as
    ``serve`` does; the lines say what is wrong meanwhile. A Redis that refuses the credentials
    will not change its mind: that error is raised."""
    redis = make_redis(settings)
    delay = 0.5
    try:
        while not stop.is_set():
            try:
                await redis.ping()
                return True
            except AuthenticationError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis_unavailable", error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, REDIS_WAIT_MAX_S)
        return False
    finally:
        await redis.aclose()


async def _until(main: asyncio.Task[None], event: asyncio.Event) -> None:
    """Wait for ``event``, or for ``main`` (the arq worker) to end first (an error)."""
    waiter = asyncio.create_task(event.wait())
    try:
        await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def _shut_down(
    worker: Worker, main: asyncio.Task[None], grace: float
) -> tuple[int, BaseException | None]:
    """Stop and close the arq worker and the consumer; returns how many jobs the grace cut off
    and the error the worker had ended with on its own, if any."""
    log.info("worker_stopping", grace_s=grace, jobs_in_flight=len(worker.tasks))
    # Order matters: no new arq jobs (the poll loop ends; running jobs are their own tasks),
    # no new callbacks, then wait for both kinds of work in flight under one deadline.
    error = await _cancel(main)
    _, cut = await asyncio.gather(stop_consumer(worker.ctx, grace), finish_jobs(worker, grace))
    try:
        await worker.close()
    except (RedisError, OSError) as exc:
        # Redis went away first: arq's close gives up before its shutdown hook; close ours.
        log.warning("worker_close_unavailable", error=type(exc).__name__)
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
    return cut, error


async def _cancel(task: asyncio.Task[None], every: float = 0.5) -> BaseException | None:
    """Cancel ``task`` until it has ended; returns the error it ended with on its own, if any.

    Cancelled again every ``every`` s because a cancellation can be lost (``asyncio.wait_for`` in
    Python 3.11, see ``run_worker``): arq's poll loop would then go on forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    return None if task.cancelled() else task.exception()
