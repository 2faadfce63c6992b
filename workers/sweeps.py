"""Periodic sweeps: time out overdue requests, release unmatched callbacks, trim indexes, remove
the inbox consumers of workers that died.

Every worker runs them; the scripts pop what is due atomically, so several workers never handle
the same request or callback twice, and each sweep costs O(log n + due), not O(pending).
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError

from gateway.infra import logs
from workers.context import WorkerContext

log = logs.get("workers.sweeps")

BATCH = 1000
TRIM_EVERY_S = 60.0
# A consumer of the inbox's group idle this long most likely belongs to a worker that died; with no
# entry left in its hands it is removed (Store.forget_idle_consumers).
CONSUMER_IDLE_MS = 600_000


async def sweep_once(ctx: WorkerContext) -> tuple[int, int]:
    """One pass; returns (requests timed out, parking spots released)."""
    expired = released = 0
    while True:
        due = await ctx.store.expire_due(BATCH)
        expired += due
        if due < BATCH:
            break
    while True:
        due = await ctx.store.release_unmatched(BATCH)
        released += due
        if due < BATCH:
            break
    return expired, released


async def run_sweeps(ctx: WorkerContext, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    next_trim = loop.time()
    while not stop.is_set():
        try:
            expired, released = await sweep_once(ctx)
            if expired or released:
                log.info("swept", timed_out=expired, unmatched_released=released)
            if loop.time() >= next_trim:
                # Indexes are trimmed at least twice per retention period (short in tests).
                next_trim = loop.time() + min(TRIM_EVERY_S, ctx.settings.GATEWAY_RETENTION / 2)
                await ctx.store.trim_indexes()
                gone = await ctx.store.forget_idle_consumers(CONSUMER_IDLE_MS)
                if gone:
                    log.info("consumers_forgotten", count=gone)
        except (RedisError, OSError) as exc:
            log.warning("sweep_unavailable", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ctx.settings.WORKER_SWEEP_INTERVAL)
