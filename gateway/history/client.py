"""The history store as a process holds it: connected (and migrated) in the background, so that a
PostgreSQL that is down or slow never holds up the start of the API or the worker, nor the hot
path later. ``store`` is None until the first connection and migration succeed; readiness and
the endpoints that read history say so.
"""

from __future__ import annotations

import asyncio
import contextlib

from gateway.history.store import HistoryStore
from gateway.infra import logs
from gateway.settings import Settings

log = logs.get("gateway.history")

RETRY_MAX_S = 5.0
CHECK_TIMEOUT_S = 1.0  # /readyz waits no longer for PostgreSQL


class HistoryUnavailable(Exception):
    """History is needed and PostgreSQL cannot be reached (yet)."""


class HistoryClient:
    def __init__(self, settings: Settings, *, pool_size: int | None = None) -> None:
        if settings.DATABASE_URL is None:
            raise ValueError("DATABASE_URL is not set")
        self._url = settings.DATABASE_URL.get_secret_value()
        self._retention = settings.GATEWAY_RETENTION
        self._pool_size = pool_size or settings.DATABASE_POOL_SIZE
        self.store: HistoryStore | None = None
        self.error: str = "connecting"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name="history-connect")

    async def _connect(self) -> None:
        delay = 0.1
        while True:
            try:
                self.store = await HistoryStore.connect(
                    self._url, retention_s=self._retention, max_size=self._pool_size
                )
            except (TimeoutError, OSError, Exception) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("history_unavailable", error=self.error, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            self.error = ""
            return

    async def check(self) -> str:
        """'' if PostgreSQL answers now, else why not (for /readyz)."""
        if self.store is None:
            return self.error or "connecting"
        try:
            await asyncio.wait_for(self.store.ping(), CHECK_TIMEOUT_S)
        except Exception as exc:  # OSError, TimeoutError and asyncpg's own errors alike
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return ""

    def require(self) -> HistoryStore:
        if self.store is None:
            raise HistoryUnavailable(self.error or "connecting")
        return self.store

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.store is not None:
            await self.store.close()
            self.store = None
