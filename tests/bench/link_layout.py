"""Redis bytes per message link: a string link and a ``state:`` hash (two keys, the layout before)
against one ``link:{ckey}`` hash holding the api_id and the last status (the layout now).

Run: .venv/bin/python tests/bench/link_layout.py [links]   (default 50,000). Prints INFO used_memory
delta / links for each layout.
"""

import asyncio
import sys
import uuid

from redis.asyncio import Redis

from tooling.embedded_redis import EmbeddedRedis

TTL = 3 * 86400  # GATEWAY_LINK_TTL's default
BATCH = 5000


async def measure(links: int) -> None:
    with EmbeddedRedis() as server:
        redis = Redis.from_url(server.url, decode_responses=True)
        for layout in ("link + state", "one hash"):
            await redis.flushall()
            before = int((await redis.info("memory"))["used_memory"])
            pipe = redis.pipeline(transaction=False)
            for n in range(links):
                message, api_id, cb = (str(uuid.uuid4()) for _ in range(3))
                link = f"cg:link:msg:{message}"
                if layout == "link + state":
                    state = f"cg:state:msg:{message}"
                    pipe.set(link, api_id, ex=TTL)
                    pipe.hset(state, mapping={"seq": "3", "cb": cb})
                    pipe.expire(state, TTL)
                else:
                    pipe.hset(link, mapping={"a": api_id, "q": "3", "c": cb})
                    pipe.expire(link, TTL)
                if n % BATCH == BATCH - 1:
                    await pipe.execute()
            await pipe.execute()
            after = int((await redis.info("memory"))["used_memory"])
            print(f"{layout:>12}: {(after - before) / links:6.1f} B per link")
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000))
