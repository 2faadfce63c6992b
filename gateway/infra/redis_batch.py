"""Automatic pipelining of script calls: what many tasks send at once goes out as one pipeline.

The worker handles up to ``WORKER_CONCURRENCY`` inbox entries at a time, and each one is a short
chain of scripts (correlate, emit, finish). Sent one by one, every script costs a connection
checkout, a socket write and a read of its own; that overhead, not Redis, is what limits a worker
(docs/performance.md). ``BatchingRedis`` is a ``Redis`` client whose ``EVALSHA`` calls are queued
and sent together, in one non-transactional pipeline, two event-loop iterations later: whatever the
concurrent tasks asked for meanwhile shares one write and one read.

The pipeline is written by hand on a pooled connection: each call packed by hiredis (C) and the
replies read one by one with ``Connection.read_response``. redis-py's ``Pipeline`` does the same
in Python (an ``Encoder.encode`` per argument, a command stack, per-reply callbacks) at about three
times the client CPU: 87 µs against 26 µs per 22-argument ``EVALSHA`` in a batch of 26
(docs/performance.md), and the worker sends three or four such calls per callback. The batch is
written as one buffer (uvloop writes each item of a list with a syscall of its own). A read-only
script called through ``read_only_call`` (the subscription match) is sent once per batch for
identical arguments, its reply shared (``enqueue_shared``). hiredis packs exactly
what redis-py's encoder would (tests/infra/test_redis_batch.py checks it against redis-py's packer);
an argument neither accepts (``None``, a bool) fails its own call with ``DataError``.

Nothing about a call changes but its timing: each caller still gets its own reply or its own error
(a script missing from Redis's cache, after a restart, is loaded once and its calls sent again), a
connection failure fails every call of that batch (each caller already treats a ``RedisError`` as
"retry later"), and the calls of one task stay in order because a task awaits each before the
next. Scripts are the only commands batched: each is atomic on its own, so interleaving calls of
different tasks in one pipeline is exactly what would happen on separate connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError

MAX_BATCH = 256  # calls per pipeline; the rest go in the next one

Call = tuple[tuple[Any, ...], "asyncio.Future[Any]"]
ScriptSource = bytes | str | memoryview


class BatchingRedis(Redis):
    """A ``Redis`` client (sharing another client's connection pool) that batches ``EVALSHA``."""

    def __init__(self, base: Redis) -> None:
        super().__init__(connection_pool=base.connection_pool)
        self._queue: list[Call] = []
        self._shared: dict[tuple[Any, ...], asyncio.Future[Any]] = {}  # read-only calls queued
        self._flushing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._scripts: dict[str, ScriptSource] = {}  # sha -> source, to load what Redis lost

    def register_script(self, script: ScriptSource) -> AsyncScript:  # type: ignore[override]  # redis-py types the sync one
        registered = BatchedScript(self, script)
        self._scripts[registered.sha] = script
        return registered

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.enqueue((sha, numkeys, *keys_and_args))

    def enqueue(self, evalsha_args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one ``EVALSHA sha numkeys keys... args...``; its reply (or error) comes in the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((evalsha_args, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush_later)
        return future

    def enqueue_shared(self, evalsha_args: tuple[Any, ...]) -> Awaitable[Any]:
        """``enqueue`` for a read-only script: a call identical to one still queued (not yet sent)
        shares its reply. Both would have read the same state anyway, one after the other in the
        same pipeline; a call made after the batch went out is sent with the next one, so it never
        gets an answer older than itself. Each caller awaits its own shield: one caller cancelled
        does not cancel the reply for the others."""
        future = self._shared.get(evalsha_args)
        if future is None:
            future = self._shared[evalsha_args] = self.enqueue(evalsha_args)
        return asyncio.shield(future)

    def _flush_later(self) -> None:
        # One more loop iteration: the tasks that became ready in this one reach their call too
        # (measured on the worker: mean batch 12 -> 26 calls, single-call batches 28 % -> 5 %).
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        self._shared.clear()
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Call]) -> None:
        try:
            replies = await self._replies(batch)
        except BaseException as exc:
            # Whatever went wrong (Redis unreachable, a bug, cancellation), no caller may be
            # left waiting: each gets the error (a cancellation becomes a RedisError).
            error = exc if isinstance(exc, Exception) else RedisError("cancelled")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _replies(self, batch: list[Call]) -> list[Any]:
        """The batch's replies; scripts Redis no longer has are loaded once and their calls sent
        again (a script it never had, not registered here, keeps its NOSCRIPT error)."""
        replies = await self._pipeline(batch)
        again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        missing = {batch[i][0][0] for i in again}
        if not again or not missing <= self._scripts.keys():
            return replies
        try:
            for sha in missing:
                await self.script_load(self._scripts[sha])
            second = await self._pipeline([batch[i] for i in again])
        except Exception as exc:
            # Only the calls that needed the reload fail: the others' scripts ran, and their
            # callers must have the replies (told "failed", they would run them again).
            second = [exc] * len(again)
        for i, reply in zip(again, second, strict=True):
            replies[i] = reply
        return replies

    async def _pipeline(self, batch: list[Call]) -> list[Any]:
        """One write of every call's ``EVALSHA``, then their replies in order (an error reply is
        that call's exception). Any other failure drops the connection and fails the batch."""
        replies: list[Any] = [None] * len(batch)
        packed: list[bytes] = []
        sent: list[int] = []
        for i, (args, _) in enumerate(batch):
            try:
                packed.append(hiredis.pack_command(("EVALSHA", *args)))
                sent.append(i)
            except (TypeError, ValueError) as exc:
                replies[i] = DataError(f"cannot send argument: {exc}")
        if not sent:
            return replies
        pool = self.connection_pool
        conn = await pool.get_connection()
        try:
            # One buffer, one write: uvloop writes each item of a list with a syscall of its own.
            await conn.send_packed_command(b"".join(packed))
            for i in sent:
                try:
                    replies[i] = await conn.read_response()
                except ResponseError as exc:  # the script's own error: the connection is fine
                    replies[i] = exc
        except BaseException:
            # Replies left unread would answer the next user of this connection: drop it.
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return replies


class BatchedScript(AsyncScript):
    """A registered script whose calls go straight into its client's batch (no coroutine of its
    own; NOSCRIPT is handled by the batch). Called with another ``client`` (a pipeline), it is
    redis-py's ``Script``."""

    def __init__(self, client: BatchingRedis, script: ScriptSource) -> None:
        super().__init__(client, script)
        self.batcher = client

    def __call__(  # type: ignore[override]
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Redis | None = None,
    ) -> Awaitable[Any]:
        if client is not None and client is not self.batcher:
            return super().__call__(keys, args, client)
        keys = keys or ()
        return self.batcher.enqueue((self.sha, len(keys), *keys, *(args or ())))

    def shared(self, keys: Sequence[Any] = (), args: Iterable[Any] = ()) -> Awaitable[Any]:
        """A call of a read-only script: identical calls in the same batch share one reply."""
        return self.batcher.enqueue_shared((self.sha, len(keys), *keys, *args))


def read_only_call(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Awaitable[Any]:
    """Call a script that only reads: shared within a batch over a ``BatchingRedis``, a plain
    call otherwise."""
    if isinstance(script, BatchedScript):
        return script.shared(keys, args)
    return script(keys=keys, args=args)
