"""Which Redis errors are waited out: each error here is produced by a real Redis put in the state
that causes it, and read through redis-py as the worker reads it (it strips the code of the error
replies it knows, so ``NOSCRIPT``, ``READONLY`` and ``OOM`` cannot be recognised from the text)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from gateway.infra.redis_batch import BatchingRedis
from gateway.infra.redis_errors import transient
from tooling.embedded_redis import EmbeddedRedis, free_port

WRITE = "return redis.call('SET', KEYS[1], ARGV[1])"


@pytest.fixture
async def private() -> AsyncIterator[Redis]:
    """A Redis of this test's own: it is made a replica, full and busy."""
    server = EmbeddedRedis().start()
    client = Redis.from_url(server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


async def error_of(call: Awaitable[Any]) -> RedisError:
    with pytest.raises(RedisError) as caught:
        await call
    return caught.value


async def test_a_read_only_full_or_script_less_redis_is_waited_out(private: Redis) -> None:
    batching = BatchingRedis(private)
    write = batching.register_script(WRITE)
    seen: list[RedisError] = []

    # A demoted primary (what a connection still open to it sees after a failover).
    await private.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    seen.append(await error_of(private.set("k", "v")))
    seen.append(await error_of(write(keys=["k"], args=["v"])))  # the write inside a script
    await private.execute_command("REPLICAOF", "NO", "ONE")

    # Out of memory under noeviction.
    await private.config_set("maxmemory", "1")
    seen.append(await error_of(private.set("k", "v")))
    seen.append(await error_of(write(keys=["k"], args=["v"])))
    await private.config_set("maxmemory", "0")

    # A script Redis no longer has (restarted or flushed), sent without a reload.
    seen.append(await error_of(private.evalsha("0" * 40, 0)))

    # Unreachable.
    gone = Redis(port=free_port(), socket_connect_timeout=1)
    seen.append(await error_of(gone.ping()))
    await gone.aclose()

    names = [type(exc).__name__ for exc in seen]
    assert names == [
        "ReadOnlyError",
        "ReadOnlyError",
        "OutOfMemoryError",
        "OutOfMemoryError",
        "NoScriptError",
        "ConnectionError",
    ]
    # The codes are gone from the text: a keyword test could not have told these apart.
    assert not any(code in str(exc) for exc in seen for code in ("READONLY", "OOM", "NOSCRIPT"))
    assert [transient(exc) for exc in seen] == [True] * len(seen)
    assert await write(keys=["k"], args=["v"]) == "OK"  # and each state was passing


async def test_a_busy_redis_is_waited_out(private: Redis) -> None:
    await private.config_set("busy-reply-threshold", "50")
    spinner = Redis(host="127.0.0.1", port=private.connection_pool.connection_kwargs["port"])
    spin = asyncio.create_task(spinner.eval("while true do end", 0))
    try:
        busy: RedisError | None = None
        for _ in range(100):
            await asyncio.sleep(0.02)
            try:
                await private.ping()
            except ResponseError as exc:
                busy = exc
                break
        assert busy is not None and str(busy).startswith("BUSY ")
        assert type(busy) is ResponseError  # a code redis-py does not type: kept in the text
        assert transient(busy)
    finally:
        with contextlib.suppress(RedisError):
            await private.script_kill()
        with contextlib.suppress(RedisError):
            await spin
        await spinner.aclose()


async def test_what_fails_the_same_way_every_time_is_not_waited_out(private: Redis) -> None:
    batching = BatchingRedis(private)
    seen: list[RedisError] = []
    await private.set("text", "not a number")
    seen.append(await error_of(private.lpush("text", "x")))  # WRONGTYPE
    seen.append(await error_of(private.eval("return redis.call('INCR', KEYS[1])", 1, "text")))
    seen.append(await error_of(private.eval("error('broken')", 0)))
    seen.append(await error_of(batching.register_script(WRITE)(keys=["k"], args=[None])))  # DataError
    names = [type(exc).__name__ for exc in seen]
    assert names == ["ResponseError", "ResponseError", "ResponseError", "DataError"]
    assert [transient(exc) for exc in seen] == [False] * len(seen)


async def test_a_redis_refusing_writes_after_a_failed_save_is_waited_out(tmp_path: Path) -> None:
    """A full or failing disk: the last background save failed, so Redis refuses writes (MISCONF,
    a code redis-py does not type) until a save succeeds again. Here its directory is removed."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = EmbeddedRedis(directory=str(directory)).start()
    client = Redis.from_url(server.url, decode_responses=True)
    try:
        await client.config_set("save", "3600 1")  # snapshots on: a failed one stops writes
        shutil.rmtree(directory)
        await client.bgsave()
        for _ in range(250):
            persistence = await client.info("persistence")
            if not persistence["rdb_bgsave_in_progress"] and persistence["rdb_last_bgsave_status"] == "err":
                break
            await asyncio.sleep(0.02)
        write = BatchingRedis(client).register_script(WRITE)
        seen = [await error_of(client.set("k", "v")), await error_of(write(keys=["k"], args=["v"]))]
        assert [type(exc) for exc in seen] == [ResponseError, ResponseError]
        assert all(str(exc).startswith("MISCONF ") for exc in seen)
        assert [transient(exc) for exc in seen] == [True, True]
    finally:
        with contextlib.suppress(RedisError):
            await client.config_set("save", "")  # else its shutdown would try to save, and fail
        await client.aclose()
        server.stop()
