"""The history backlog guard: new work is refused (503) while too many changes wait to be copied
to PostgreSQL, so that a long PostgreSQL outage fills neither Redis nor loses history.

The archive zset's size is read once a second in the background, not per request, so the bound
costs the hot path one attribute read; it is a soft bound (a second's traffic may pass it).
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.exceptions import RedisError

from gateway.domain.errors import Unavailable
from gateway.infra import logs
from gateway.store.archive import ArchiveStore

log = logs.get("gateway.backlog")

POLL_S = 1.0


class HistoryBacklog:
    def __init__(self, archive: ArchiveStore, limit: int, *, poll_s: float = POLL_S) -> None:
        self.archive = archive
        self.limit = limit
        self.poll_s = poll_s
        self.size = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def check(self) -> None:
        """Raise 503 while the backlog is at its bound."""
        if self.full:
            raise Unavailable(
                f"history backlog full ({self.size} changes wait for PostgreSQL, "
                f"GATEWAY_HISTORY_BACKLOG_MAX={self.limit}): retry later"
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="history-backlog")

    async def _run(self) -> None:
        was_full = False
        while True:
            with contextlib.suppress(RedisError, OSError):
                self.size = await self.archive.backlog()
            if self.full != was_full:
                was_full = self.full
                (log.error if was_full else log.info)(
                    "history_backlog_full" if was_full else "history_backlog_drained",
                    size=self.size,
                    limit=self.limit,
                )
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
