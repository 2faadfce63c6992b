"""Keeping every gateway process together under Plivo's account rate limit.

A sliding window in Redis (``Store.rate_acquire``) grants at most ``limit`` upstream requests in
any ``window`` seconds across all processes. A caller over the limit waits for the next free slot
(briefly queueing instead of collecting 429s from Plivo), up to ``max_wait`` seconds in total,
then gets a 429 itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from gateway.domain.errors import RateLimited
from gateway.store import Store


class SharedRateLimiter:
    def __init__(self, store: Store, name: str, *, limit: int, window: float, max_wait: float) -> None:
        self._store = store
        self._name = name
        self._limit = limit
        self._window = window
        self._max_wait = max_wait

    async def __call__(self) -> None:
        if self._limit <= 0:
            return
        give_up = time.monotonic() + self._max_wait
        while True:
            member = f"{time.time_ns()}-{secrets.token_hex(4)}"
            wait = await self._store.rate_acquire(self._name, self._limit, self._window, member)
            if wait <= 0:
                return
            if time.monotonic() + wait > give_up:
                raise RateLimited("upstream rate limit reached, retry later", retry_after=wait)
            # A little jitter so that waiters of many processes do not all retry at one instant.
            await asyncio.sleep(wait + secrets.randbelow(20) / 1000)
