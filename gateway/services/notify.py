"""Wake-ups for requests that somebody is waiting on (``GET ?wait=``, the SSE stream).

The worker publishes a request's api_id on ``{prefix}notify`` whenever it stores an event for
it. Each gateway process holds ONE pub/sub connection, whatever the number of waiters, and wakes
the waiters of that api_id in memory. A waiter always re-reads Redis after waking, and also after
``RECHECK_S`` even without a message, so a notification lost while the pub/sub connection was
re-established delays it by seconds at most instead of leaving it hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.infra import logs

log = logs.get("gateway.services.notify")

RECHECK_S = 5.0


class Notifier:
    def __init__(self, redis: Redis, channel: str) -> None:
        self._redis = redis
        self._channel = channel
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(len(s) for s in self._waiters.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def register(self, api_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[api_id].add(event)
        return event

    def unregister(self, api_id: str, event: asyncio.Event) -> None:
        waiters = self._waiters.get(api_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[api_id]

    async def wait(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set or ``seconds`` (capped at the recheck interval) pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(seconds, RECHECK_S))
        event.clear()

    def _wake(self, api_id: str) -> None:
        for event in self._waiters.get(api_id, ()):
            event.set()

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._wake(str(message["data"]))
            except (RedisError, OSError) as exc:
                log.warning("notify_reconnect", error=type(exc).__name__)
                for api_id in list(self._waiters):  # let waiters re-read while we reconnect
                    self._wake(api_id)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
