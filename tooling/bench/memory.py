"""Phase 5: Redis bytes per pending request, and what one timeout sweep costs.

Runs against a private, empty redis-server (never the stack's), so INFO's ``used_memory`` delta
is the requests and nothing else. Pending requests go in through ``Store.save_request`` (the submit
script, pipelined). For the sweep, ``sweep_due`` full requests are due and the deadline queues
hold ``sweep_pending`` entries in all: the rest are entries only, in queues of longer timeouts,
the same layout as real pending requests (a sweep that reads anything but what is due is exactly
what this figure must expose).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis.asyncio import Redis

from gateway.store import make_store
from gateway.store.core import packed_id
from gateway.store.keys import Keys
from tooling.bench.bulk import new_request, save_requests, settings_for
from tooling.bench.options import BenchOptions
from tooling.embedded_redis import EmbeddedRedis

PREFIX = "cg:"
KEYS = Keys(PREFIX)
WEBHOOK = [{"type": "webhook", "url": "https://billing.example.com/hooks/plivo"}]


async def _used(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def per_request(redis: Redis, url: str, count: int, metadata_bytes: int) -> dict[str, Any]:
    settings = settings_for(url, PREFIX)
    before = await _used(redis)
    reqs = [new_request(str(uuid.uuid4()), WEBHOOK, metadata_bytes, 3600) for _ in range(count)]
    await save_requests(redis, settings, reqs)
    after = await _used(redis)
    sample = reqs[:: max(1, count // 200)]
    req_sizes = [await redis.memory_usage(KEYS.req(r.api_id)) or 0 for r in sample]
    usage: dict[str, float] = {"req_key_bytes": sum(req_sizes) / len(req_sizes)}
    for name, pattern in (
        ("refs", KEYS.key("refs", "*")),
        ("due_queues", KEYS.key("due", "*")),
        ("requests:pending", KEYS.requests("pending")),
    ):
        total = 0
        async for key in redis.scan_iter(match=pattern, count=1000):
            total += await redis.memory_usage(key, samples=0) or 0
        usage[f"{name}_bytes_each"] = total / count
    return {
        "pending": count,
        "metadata_bytes": metadata_bytes,
        "bytes_per_request": (after - before) / count,
        "memory_usage": {k: round(v, 1) for k, v in usage.items()},
        "keys": await redis.dbsize(),
    }


async def _fill_deadlines(redis: Redis, count: int, batch: int = 10_000) -> None:
    """``count`` not-yet-due entries, spread over a few timeout queues as traffic would be."""
    far = int(time.time() * 1000) + 86_400_000
    timeouts = (300, 3600, 86_400, 604_800)
    for start in range(0, count, batch):
        ids = [packed_id(str(uuid.UUID(int=i + 1))) for i in range(start, min(count, start + batch))]
        async with redis.pipeline(transaction=False) as pipe:
            for n, timeout in enumerate(timeouts):
                if ids[n :: len(timeouts)]:
                    pipe.rpush(KEYS.due_queue(timeout), *ids[n :: len(timeouts)])
            await pipe.execute()
    await redis.zadd(KEYS.due, {str(t): far + t for t in timeouts})


async def _sweep_once(redis: Redis, url: str, due: int) -> tuple[str, float, int]:
    store = make_store(settings_for(url, PREFIX), redis)
    began = time.perf_counter()
    taken = await store.expire_due(limit=due)
    how = "Store.expire_due"
    return how, (time.perf_counter() - began) * 1000, taken


def _server_usec(stats: dict[str, Any]) -> int:
    # Commands called from Lua are counted again under their own names: take the script's total.
    for name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall"):
        if name in stats:
            return int(stats[name]["usec"])
    return sum(int(v["usec"]) for v in stats.values() if isinstance(v, dict) and "usec" in v)


async def sweep_cost(redis: Redis, url: str, pending: int, due: int) -> dict[str, Any]:
    settings = settings_for(url, PREFIX)
    await redis.flushall()
    await save_requests(
        redis, settings, [new_request(str(uuid.uuid4()), WEBHOOK, 100, 0) for _ in range(due)]
    )
    await _fill_deadlines(redis, pending - due)
    await redis.config_resetstat()
    how, ms, taken = await _sweep_once(redis, url, due)
    stats = await redis.info("commandstats")
    server_us = _server_usec(stats)
    return {
        "pending": pending,
        "due": due,
        "taken": taken,
        "method": how,
        "client_ms": round(ms, 2),
        "server_ms": round(server_us / 1000, 2),
    }


async def run(opts: BenchOptions) -> dict[str, Any]:
    with EmbeddedRedis() as server:
        redis = Redis.from_url(server.url, decode_responses=True)
        try:
            mem = await per_request(redis, server.url, opts.pending, opts.metadata_bytes)
            # What-if: the same requests on a Redis with its default hash encoding limits, i.e.
            # without deploy/redis.conf (the embedded Redis uses that file's settings).
            await redis.flushall()
            await redis.config_set("hash-max-listpack-value", 64)
            await redis.config_set("hash-max-listpack-entries", 128)
            defaults = await per_request(redis, server.url, opts.pending, opts.metadata_bytes)
            await redis.config_set("hash-max-listpack-value", 1024)
            await redis.config_set("hash-max-listpack-entries", 512)
            big = await sweep_cost(redis, server.url, opts.sweep_pending, opts.sweep_due)
            fewer = max(opts.sweep_due * 2, opts.sweep_pending // 100)
            small = await sweep_cost(redis, server.url, fewer, opts.sweep_due)
        finally:
            await redis.aclose()
    return {"memory": mem, "memory_redis_defaults": defaults, "sweep": big, "sweep_small": small}
