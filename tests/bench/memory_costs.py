# ruff: noqa: RUF015
"""Memory cost per pending request and per stored callback (quoted in gateway/store/core.py).

Run: .venv/bin/python tests/bench/memory_costs.py
"""

import asyncio
import json
import uuid

from redis.asyncio import Redis

from gateway.embedded_redis import EmbeddedRedis
from gateway.store import NewRequest, Store


async def main():
    with EmbeddedRedis() as r:
        redis = Redis.from_url(r.url, decode_responses=True)
        store = Store(redis, "cg:", dedup_ttl=86400, retention=2592000, grace=300)
        meta = {"order_id": "x" * 86}  # ~100 B as JSON
        n = 20000
        base = (await redis.info("memory"))["used_memory"]
        for _ in range(0, n, 500):
            await asyncio.gather(
                *(
                    store.save_request(
                        NewRequest(
                            str(uuid.uuid4()),
                            "POST",
                            "Call/",
                            {},
                            meta,
                            [
                                {
                                    "type": "webhook",
                                    "url": "https://billing.internal/hooks/plivo",
                                    "method": "POST",
                                }
                            ],
                            3600,
                            uuid.uuid4().hex[:16],
                        )
                    )
                    for _ in range(500)
                )
            )
        after = (await redis.info("memory"))["used_memory"]
        k = [k async for k in redis.scan_iter(match="cg:req:*", count=100)][0]
        print(
            "per pending request (INFO delta):",
            (after - base) // n,
            "B; req hash MEMORY USAGE:",
            await redis.memory_usage(k),
        )
        lk = [k async for k in redis.scan_iter(match="cg:link:*", count=100)][0]
        print("link:ref key:", await redis.memory_usage(lk))
        base = (await redis.info("memory"))["used_memory"]
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
        after = (await redis.info("memory"))["used_memory"]
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
