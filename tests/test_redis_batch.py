"""Automatic pipelining of script calls (gateway.redis_batch) against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.embedded_redis import EmbeddedRedis
from gateway.redis_batch import BatchingRedis

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_ON_NEGATIVE = "if tonumber(ARGV[1]) < 0 then return redis.error_reply('negative') end return ARGV[1]"


class Counting(BatchingRedis):
    """Counts the pipelines sent (the calls in each)."""

    def __init__(self, base: Redis) -> None:
        super().__init__(base)
        self.batches: list[int] = []

    async def _send(self, batch: list[Any]) -> None:
        self.batches.append(len(batch))
        await super()._send(batch)


async def test_concurrent_calls_share_pipelines_and_keep_their_own_answers(redis: Redis) -> None:
    client = Counting(redis)
    incr = client.register_script(INCR)
    await redis.script_load(INCR)
    answers = await asyncio.gather(*(incr(keys=[f"k{i % 4}"], args=[i]) for i in range(200)))
    # Each call gets its own reply: the running total of its key when its INCRBY ran.
    totals = {f"k{j}": sum(i for i in range(200) if i % 4 == j) for j in range(4)}
    assert {f"k{j}": int(await redis.get(f"k{j}") or 0) for j in range(4)} == totals
    assert len(set(answers)) == 200
    assert sum(client.batches) == 200 and len(client.batches) < 10


async def test_one_failing_call_does_not_fail_the_others(redis: Redis) -> None:
    client = BatchingRedis(redis)
    check = client.register_script(FAIL_ON_NEGATIVE)
    results = await asyncio.gather(*(check(args=[n]) for n in (1, -1, 2)), return_exceptions=True)
    assert results[0] == "1" and results[2] == "2"
    assert isinstance(results[1], ResponseError) and "negative" in str(results[1])


async def test_scripts_missing_from_the_cache_are_loaded_again(redis: Redis) -> None:
    client = BatchingRedis(redis)
    incr = client.register_script(INCR)
    assert await incr(keys=["k"], args=[1]) == 1
    await redis.script_flush()  # as after a Redis restart
    await redis.config_resetstat()
    assert sorted(await asyncio.gather(*(incr(keys=["k"], args=[1]) for _ in range(20)))) == list(
        range(2, 22)
    )
    stats = await redis.info("commandstats")
    assert stats["cmdstat_script|load"]["calls"] == 1  # loaded once for the whole batch


async def test_a_lost_connection_fails_every_call_then_recovers() -> None:
    server = EmbeddedRedis().start()
    base = Redis.from_url(server.url, decode_responses=True)
    client = BatchingRedis(base)
    incr = client.register_script(INCR)
    try:
        assert await incr(keys=["k"], args=[1]) == 1
        server.stop()
        results = await asyncio.gather(
            *(incr(keys=["k"], args=[1]) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, (RedisConnectionError, OSError)) for r in results)
        server.start()
        assert await incr(keys=["k"], args=[1]) == 1  # a fresh server (no persistence): works again
    finally:
        await base.aclose()
        server.stop()


@pytest.mark.parametrize("n", [1, 300])
async def test_calls_beyond_one_batch_are_all_answered(redis: Redis, n: int) -> None:
    client = Counting(redis)
    incr = client.register_script(INCR)
    assert sorted(await asyncio.gather(*(incr(keys=["k"], args=[1]) for _ in range(n)))) == list(
        range(1, n + 1)
    )
    assert all(size <= 256 for size in client.batches)


async def test_no_caller_is_left_waiting_when_the_batch_step_itself_fails(redis: Redis) -> None:
    class Broken(BatchingRedis):
        async def _replies(self, batch: list[Any]) -> list[Any]:
            raise ValueError("a bug in the batch step")

    incr = Broken(redis).register_script(INCR)
    calls = asyncio.gather(*(incr(keys=["k"], args=[1]) for _ in range(3)), return_exceptions=True)
    results = await asyncio.wait_for(calls, timeout=5)
    assert all(isinstance(r, ValueError) for r in results)
