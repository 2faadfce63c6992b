"""Automatic pipelining of script calls (gateway.infra.redis_batch) against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.infra.redis_batch import BatchedScript, BatchingRedis, read_only_call
from tooling.embedded_redis import EmbeddedRedis

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


async def test_a_reload_that_fails_fails_only_the_calls_that_needed_it(redis: Redis) -> None:
    """The calls whose scripts ran keep their replies when loading another script fails: told
    "failed", a caller would run its script a second time."""
    client = BatchingRedis(redis)
    incr = client.register_script(INCR)
    broken = client.register_script("return (")  # does not compile: SCRIPT LOAD fails
    await redis.script_load(INCR)
    results = await asyncio.gather(
        incr(keys=["k"], args=[1]), broken(), incr(keys=["k"], args=[1]), return_exceptions=True
    )
    assert sorted(r for r in results if isinstance(r, int)) == [1, 2]
    assert isinstance(results[1], ResponseError) and "compiling" in str(results[1])
    assert await redis.get("k") == "2"


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


ECHO = "return ARGV"
# Keeps Redis busy for ARGV[1] ms, then answers ARGV[2].
BUSY = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local stop = now() + ARGV[1] * 1000
repeat until now() >= stop
return ARGV[2]
"""

argument = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
)


@given(args=st.lists(argument, max_size=12))
@settings(max_examples=300, deadline=None)
def test_the_batch_packs_exactly_what_redis_py_packs(args: list[Any]) -> None:
    """The oracle is redis-py's own packer: same bytes on the wire for every argument type the
    stores send (str, bytes, int of any size, float)."""
    expected = b"".join(Connection().pack_command("EVALSHA", "f" * 40, 0, *args))
    assert hiredis.pack_command(("EVALSHA", "f" * 40, 0, *args)) == expected


async def test_an_argument_that_cannot_be_sent_fails_only_its_own_call(redis: Redis) -> None:
    client = Counting(redis)
    echo = client.register_script(ECHO)
    results = await asyncio.gather(
        echo(args=["a", 1]),
        echo(args=[None]),
        echo(args=[True]),
        echo(args=[2.5, b"b"]),
        return_exceptions=True,
    )
    assert results[0] == ["a", "1"] and results[3] == ["2.5", "b"]
    assert isinstance(results[1], DataError) and isinstance(results[2], DataError)
    assert client.batches == [4]  # one batch: the two good calls went out together


async def test_a_batch_cut_off_mid_read_leaves_no_reply_for_the_next_one(redis_server: EmbeddedRedis) -> None:
    """A batch that times out with replies still to come must not hand those replies to whoever
    uses the connection next: its connection is dropped, the next batch gets its own answers."""
    base = Redis.from_url(redis_server.url, decode_responses=True, socket_timeout=0.2, max_connections=1)
    client = BatchingRedis(base)
    busy, echo = client.register_script(BUSY), client.register_script(ECHO)
    try:
        await busy(args=[0, "warm"])  # loaded
        results = await asyncio.gather(
            busy(args=[500, "late"]), busy(args=[0, "later"]), return_exceptions=True
        )
        assert all(isinstance(r, RedisTimeoutError) for r in results)
        await asyncio.sleep(0.5)  # Redis has run both by now: their replies were written
        for n in range(5):  # the same single connection slot, used again
            assert await echo(args=[n]) == [str(n)]
    finally:
        await base.aclose()


async def test_a_cancelled_batch_leaves_no_reply_for_the_next_one(redis_server: EmbeddedRedis) -> None:
    base = Redis.from_url(redis_server.url, decode_responses=True, max_connections=1)
    client = BatchingRedis(base)
    busy, echo = client.register_script(BUSY), client.register_script(ECHO)
    try:
        await busy(args=[0, "warm"])
        call = busy(args=[300, "late"])
        await asyncio.sleep(0.05)  # written, its reply not read yet
        for task in list(client._tasks):
            task.cancel()
        with pytest.raises(RedisError):
            await call
        # At once, while Redis still owes the cancelled call its reply: a connection reused as is
        # would hand "late" to the next caller.
        for n in range(5):
            assert await echo(args=[n]) == [str(n)]
    finally:
        await base.aclose()


READ = "return redis.call('GET', KEYS[1])"


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_identical_read_only_calls_in_one_batch_share_one_reply(redis: Redis) -> None:
    client = BatchingRedis(redis)
    read = client.register_script(READ)
    assert isinstance(read, BatchedScript)
    await redis.set("k", "v1")
    await read(keys=["k"])  # loaded
    await redis.config_resetstat()
    answers = await asyncio.gather(*(read_only_call(read, ["k"], []) for _ in range(50)), read.shared(["j"]))
    assert answers == ["v1"] * 50 + [None]
    assert await evalsha_calls(redis) == 2  # one per distinct call


async def test_a_read_only_call_made_after_its_batch_went_out_is_sent_again(redis: Redis) -> None:
    client = BatchingRedis(redis)
    read = client.register_script(READ)
    assert isinstance(read, BatchedScript)
    await redis.set("k", "v1")
    await read(keys=["k"])
    await redis.config_resetstat()
    first = read.shared(["k"])
    for _ in range(100):  # until that batch has been handed to its sender
        if not client._shared:
            break
        await asyncio.sleep(0)
    assert not first.done()  # sent, not answered yet
    second = read.shared(["k"])  # identical, but later than what was sent
    assert await asyncio.gather(first, second) == ["v1", "v1"]
    assert await evalsha_calls(redis) == 2


async def test_a_cancelled_sharer_does_not_cancel_the_reply_of_the_others(redis: Redis) -> None:
    client = BatchingRedis(redis)
    read = client.register_script(READ)
    assert isinstance(read, BatchedScript)
    await redis.set("k", "v1")

    async def reader() -> Any:
        return await read.shared(["k"])

    tasks = [asyncio.create_task(reader()) for _ in range(3)]
    await asyncio.sleep(0)  # all three queued
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == ["v1", "v1"]
