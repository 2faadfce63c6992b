"""Periodic sweeps: time out overdue requests, release unmatched callbacks, trim indexes.

Every worker runs them; the scripts pop what is due atomically, so several workers never handle
the same request or callback twice, and each sweep costs O(log n + due), not O(pending).
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError

from gateway import logs
from workers.context import WorkerContext

log = logs.get("workers.sweeps")

BATCH = 1000
TRIM_EVERY_S = 60.0


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
        except (RedisError, OSError) as exc:
            log.warning("sweep_unavailable", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ctx.settings.WORKER_SWEEP_INTERVAL)
