"""Phase 5: Redis bytes per pending request, and what one timeout sweep costs.

Runs against a private, empty redis-server (never the stack's), so INFO's ``used_memory`` delta
is the requests and nothing else. Pending requests go in through ``Store.save_request`` (the submit
script, pipelined). For the sweep, the ``deadlines`` index is filled to ``sweep_pending`` members
with only ``sweep_due`` of them due (those are full requests, the rest index entries only: a
sweep that reads anything but what is due is exactly what this figure must expose).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis.asyncio import Redis

from gateway.bench.bulk import new_request, save_requests, settings_for
from gateway.bench.options import BenchOptions
from gateway.embedded_redis import EmbeddedRedis
from gateway.state import make_store

PREFIX = "cg:"
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
    usage: dict[str, float] = {}
    for kind, key_of in (("req", lambda a: f"{PREFIX}req:{a}"), ("link", lambda r: r)):
        if kind == "req":
            sizes = [await redis.memory_usage(key_of(r.api_id)) or 0 for r in sample]
        else:
            sizes = [await redis.memory_usage(f"{PREFIX}link:ref:{r.ref}") or 0 for r in sample]
        usage[f"{kind}_key_bytes"] = sum(sizes) / len(sizes)
    for index in ("requests", "requests:pending", "deadlines"):
        total = await redis.memory_usage(PREFIX + index, samples=0) or 0
        usage[f"{index}_bytes_each"] = total / count
    return {
        "pending": count,
        "metadata_bytes": metadata_bytes,
        "bytes_per_request": (after - before) / count,
        "memory_usage": {k: round(v, 1) for k, v in usage.items()},
        "keys": await redis.dbsize(),
    }


async def _fill_deadlines(redis: Redis, count: int, batch: int = 10_000) -> None:
    far = int(time.time() * 1000) + 86_400_000
    for start in range(0, count, batch):
        members = {f"{uuid.UUID(int=i + 1)}": far + i for i in range(start, min(count, start + batch))}
        await redis.zadd(PREFIX + "deadlines", members)


async def _sweep_once(redis: Redis, url: str, due: int) -> tuple[str, float, int]:
    store = make_store(settings_for(url, PREFIX), redis)
    expire = getattr(store, "expire_due", None)
    began = time.perf_counter()
    if expire is not None:
        taken = int(await expire(limit=due))
        how = "Store.expire_due"
    else:  # the sweep is not there yet: the index operation it will be built on
        now = int(time.time() * 1000)
        ids = await redis.zrangebyscore(PREFIX + "deadlines", "-inf", now, start=0, num=due)
        if ids:
            await redis.zrem(PREFIX + "deadlines", *ids)
        taken = len(ids)
        how = "ZRANGEBYSCORE LIMIT + ZREM (no sweep function in the store yet)"
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
            # What-if: the same requests with Redis keeping hashes up to 1 KiB values compact.
            await redis.flushall()
            await redis.config_set("hash-max-listpack-value", 1024)
            compact = await per_request(redis, server.url, max(1000, opts.pending // 10), opts.metadata_bytes)
            await redis.config_set("hash-max-listpack-value", 64)
            big = await sweep_cost(redis, server.url, opts.sweep_pending, opts.sweep_due)
            fewer = max(opts.sweep_due * 2, opts.sweep_pending // 100)
            small = await sweep_cost(redis, server.url, fewer, opts.sweep_due)
        finally:
            await redis.aclose()
    return {"memory": mem, "memory_listpack_1k": compact, "sweep": big, "sweep_small": small}
