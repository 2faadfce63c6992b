"""Automatic pipelining of script calls: what many tasks send at once goes out as one pipeline.

The worker handles up to ``WORKER_CONCURRENCY`` inbox entries at a time, and each one is a short
chain of scripts (correlate, emit, finish). Sent one by one, every script costs a connection
checkout, a socket write and a read of its own; that overhead, not Redis, is what limits a worker
(docs/performance.md). ``BatchingRedis`` is a ``Redis`` client whose ``EVALSHA`` calls are queued
and sent together, in one non-transactional pipeline, at the end of the current event-loop
iteration: whatever the concurrent tasks asked for in that iteration shares one write and one read.

Nothing about a call changes but its timing: each caller still gets its own reply or its own error
(a NOSCRIPT comes back to redis-py's ``Script``, which loads the script and calls again), a
connection failure fails every call of that batch (each caller already treats a ``RedisError`` as
"retry later"), and the calls of one task stay in order because a task awaits each before the
next. Scripts are the only commands batched: each is atomic on its own, so interleaving calls of
different tasks in one pipeline is exactly what would happen on separate connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

MAX_BATCH = 256  # calls per pipeline; the rest go in the next one

Call = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class BatchingRedis(Redis):
    """A ``Redis`` client (sharing another client's connection pool) that batches ``EVALSHA``."""

    def __init__(self, base: Redis) -> None:
        super().__init__(connection_pool=base.connection_pool)
        self._queue: list[Call] = []
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(((sha, numkeys, *keys_and_args), future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flushing = False
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            async with self.pipeline(transaction=False) as pipe:
                for args, _ in batch:
                    pipe.execute_command("EVALSHA", *args)
                replies = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError, asyncio.CancelledError) as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RedisError("cancelled"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
