# ruff: noqa: RUF015
"""Memory cost per pending request and per stored callback (quoted in gateway/store/core.py).

Run: .venv/bin/python tests/bench/memory_costs.py
"""

import asyncio
import json
import secrets
import uuid

from redis.asyncio import Redis

from gateway.store import NewRequest, Store
from tooling.embedded_redis import EmbeddedRedis

N = 100_000
TARGETS = [{"type": "webhook", "url": "https://billing.internal/hooks/plivo", "method": "POST"}]


def request() -> NewRequest:
    # What a real submit stores: a 100 B metadata object, one webhook target as the API's model
    # dumps it, and a ref minted as gateway.api.routes.requests does (16 characters).
    meta = {"order_id": "x" * 86}
    return NewRequest(str(uuid.uuid4()), "POST", "Call/", {}, meta, TARGETS, 3600, secrets.token_urlsafe(12))


async def used(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def sizes(redis: Redis, pattern: str) -> int:
    total = 0
    async for key in redis.scan_iter(match=pattern, count=1000):
        total += await redis.memory_usage(key, samples=0) or 0
    return total


async def main() -> None:
    with EmbeddedRedis() as r:
        redis = Redis.from_url(r.url, decode_responses=True)
        store = Store(redis, "cg:", dedup_ttl=86400, retention=2592000, grace=300)
        base = await used(redis)
        # Pipelined through one connection (a Store over a pipeline queues its scripts), so that
        # the INFO delta is the data and not the buffers of hundreds of client connections.
        for _ in range(0, N, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                batch = Store(pipe, "cg:", dedup_ttl=86400, retention=2592000, grace=300)  # type: ignore[arg-type]
                for _ in range(1000):
                    await batch.save_request(request())
                await pipe.execute()
        after = await used(redis)
        k = [k async for k in redis.scan_iter(match="cg:req:*", count=100)][0]
        print(f"{N:,} pending requests")
        print("per pending request (INFO delta):", (after - base) // N, "B")
        print("  req hash MEMORY USAGE:", await redis.memory_usage(k))
        print("  requests:pending, each:", round(await sizes(redis, "cg:requests:pending") / N, 1))
        print("  due:{timeout} queues, each:", round(await sizes(redis, "cg:due:*") / N, 1))
        print("  refs:{hour}:{h} buckets, each:", round(await sizes(redis, "cg:refs:*") / N, 1))
        n = 20_000
        await redis.flushall()
        base = await used(redis)
        for _ in range(0, n, 500):
            await asyncio.gather(
                *(
                    store.ingest(
                        uuid.uuid4().hex, json.dumps({"cb": "x", "p": {"api_id": "y"}}), uuid.uuid4().hex
                    )
                    for _ in range(500)
                )
            )
        await redis.delete("cg:inbox")
        after = await used(redis)
        dk = [k async for k in redis.scan_iter(match="cg:dedup:*", count=100)][0]
        nk = [k async for k in redis.scan_iter(match="cg:nonce:*", count=100)][0]
        print(
            "per stored callback dedup+nonce (INFO delta, inbox removed):",
            (after - base) // n,
            "B; dedup MEMORY USAGE:",
            await redis.memory_usage(dk),
            "nonce:",
            await redis.memory_usage(nk),
        )
        await redis.aclose()


asyncio.run(main())
