"""Redis bytes per dedup mark: a key each (the layout before lua/lib/seen.lua) against a field of
one of a period's 4,096 bucket hashes (the layout now), at steady-state counts.

Run: .venv/bin/python tests/bench/dedup_marks.py [marks]   (default 200,000: 24 h at 0.6 requests/s
with 4 callbacks each). Prints INFO used_memory delta / marks for each layout.
"""

import asyncio
import sys
import uuid

from redis.asyncio import Redis

from gateway.store.keys import MARK_SUB_HEX
from tooling.embedded_redis import EmbeddedRedis

BATCH = 5000


async def measure(marks: int) -> None:
    with EmbeddedRedis() as server:
        redis = Redis.from_url(server.url, decode_responses=True)

        async def used() -> int:
            return int((await redis.info("memory"))["used_memory"])

        for layout in ("key", "bucket"):
            await redis.flushall()
            base = await used()
            for _ in range(0, marks, BATCH):
                async with redis.pipeline(transaction=False) as pipe:
                    for _ in range(BATCH):
                        cb = uuid.uuid4().hex
                        if layout == "key":
                            pipe.set("cg:dedup:" + cb, "1", nx=True, ex=86400)
                        else:
                            bucket = f"cg:dedup:20600:{cb[:MARK_SUB_HEX]}"
                            pipe.hset(bucket, cb[MARK_SUB_HEX:], 1)
                            pipe.expireat(bucket, 2_000_000_000)
                    await pipe.execute()
            print(f"{layout}: {(await used() - base) / marks:.1f} B per mark at {marks:,} marks")
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
