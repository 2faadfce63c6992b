"""The archiver: copies what changed in Redis to PostgreSQL, in batches, and lets Redis forget
what is settled (gateway.store.archive has the protocol and why it loses nothing).

Every worker runs one. Two archivers copying the same member write the same rows (idempotent
upserts) and only one removes it. While PostgreSQL is down, nothing is removed: the archive zset
(the outbox) grows, the API refuses new work at GATEWAY_HISTORY_BACKLOG_MAX, and everything is
copied once PostgreSQL is back. Partitions are created ahead and dropped past the retention here
too, once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.history.client import HistoryClient, HistoryUnavailable
from gateway.infra import logs, metrics
from gateway.settings import Settings
from gateway.store.archive import ArchiveStore

log = logs.get("workers.archive")

BATCH = 200  # trees a batch (one PostgreSQL transaction)
MAINTAIN_EVERY_S = 60.0
RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class BatchReport:
    """One batch written: members copied, rows upserted, seconds the PostgreSQL transaction took."""

    members: int
    rows: int
    seconds: float


def observe(batch: BatchReport) -> None:
    """Count a batch in this process's metrics (the writer process sends its batches to the worker)."""
    metrics.HISTORY_WRITE_SECONDS.observe(batch.seconds)
    metrics.HISTORY_ROWS.inc(batch.rows)


async def archive_once(
    archive: ArchiveStore, history: HistoryClient, *, delay_ms: int, hot_s: int
) -> BatchReport | None:
    """One batch: what it copied, or None when nothing was due."""
    due = await archive.due(delay_ms, BATCH)
    if not due:
        return None
    changed = await archive.read(due)
    started = time.perf_counter()
    rows = await history.require().write([c.tree for c in changed])
    seconds = time.perf_counter() - started
    await archive.release(changed, hot_s)
    return BatchReport(len(changed), rows, seconds)


@dataclass(slots=True)
class Archiver:
    """One worker's archiver: its settings and what it keeps between batches."""

    archive: ArchiveStore
    history: HistoryClient
    delay_ms: int
    hot_s: int
    backfilled: bool = False
    next_maintain: float = 0.0

    async def step(self, now: float) -> BatchReport | None:
        """Backfill once, keep the partitions once a minute, copy one batch (None: nothing due)."""
        if not self.backfilled:
            marked = await self.archive.backfill()
            self.backfilled = True
            if marked:
                log.info("history_backfill", marked=marked)
        store = self.history.store
        if store is not None and now >= self.next_maintain:
            dropped = await store.maintain(int(time.time() * 1000))
            self.next_maintain = now + MAINTAIN_EVERY_S
            if dropped:
                log.info("history_partitions_dropped", partitions=dropped)
        return await archive_once(self.archive, self.history, delay_ms=self.delay_ms, hot_s=self.hot_s)


async def run_archiver(
    archive: ArchiveStore,
    history: HistoryClient,
    stop: asyncio.Event,
    *,
    delay_s: float,
    hot_s: int,
    idle_s: float,
    report: Callable[[BatchReport], None] = observe,
) -> None:
    """Until ``stop``: copy what is due, as fast as it comes; when nothing is, wait ``idle_s``;
    after a failure (PostgreSQL or Redis away), back off up to RETRY_MAX_S and try again. Each
    batch written goes to ``report``."""
    archiver = Archiver(archive, history, round(delay_s * 1000), hot_s)
    backoff = 0.1
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        wait = idle_s
        try:
            batch = await archiver.step(loop.time())
            backoff = 0.1
            if batch is not None:
                report(batch)
                if batch.members == BATCH:
                    wait = 0  # more is due: go on at once
        except HistoryUnavailable:
            # Not connected (yet): the client says why, once per attempt (history_unavailable).
            wait = backoff = min(backoff * 2, RETRY_MAX_S)
        except (RedisError, OSError) as exc:
            log.warning("archive_redis_unavailable", error=type(exc).__name__)
            wait = backoff = min(backoff * 2, RETRY_MAX_S)
        except Exception as exc:  # PostgreSQL's own errors (asyncpg): keep trying, never die
            log.warning("history_write_failed", error=f"{type(exc).__name__}: {exc}")
            wait = backoff = min(backoff * 2, RETRY_MAX_S)
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


async def run_archiver_for(
    settings: Settings,
    redis: Redis,
    history: HistoryClient,
    stop: asyncio.Event,
    report: Callable[[BatchReport], None] = observe,
) -> None:
    """``run_archiver`` as the settings say: their key prefix, history delay and hot retention."""
    delay = settings.GATEWAY_HISTORY_DELAY
    await run_archiver(
        ArchiveStore(redis, settings.GATEWAY_KEY_PREFIX),
        history,
        stop,
        delay_s=delay,
        hot_s=settings.GATEWAY_HOT_RETENTION,
        idle_s=max(0.01, delay / 2),
        report=report,
    )
