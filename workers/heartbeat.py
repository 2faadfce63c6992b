"""The worker's heartbeat: proof of life for /readyz and the ``workers_alive`` gauge.

Every ``WORKER_HEARTBEAT_INTERVAL`` seconds the worker scores itself in the ``workers`` zset
(``gateway.store.ops``); a worker that stops cleanly removes itself, one that dies ages out after
``WORKER_HEARTBEAT_TTL``. A beat that fails (Redis away) is only logged: readiness then fails on
the Redis check anyway. ``run_worker`` starts the heartbeat only once the worker can work (its
startup hook finished, the consumer runs) and ends it last at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.infra import logs
from gateway.infra.redis_client import make_redis
from gateway.settings import Settings
from gateway.store.ops import OpsStore

log = logs.get("workers.heartbeat")


@contextlib.asynccontextmanager
async def heartbeat(settings: Settings, name: str) -> AsyncIterator[None]:
    """Beat as worker ``name`` while the block runs (its own Redis client); leave when it ends."""
    redis, stop = make_redis(settings), asyncio.Event()
    beat = asyncio.create_task(run_heartbeat(redis, settings, name, stop))
    try:
        yield
    finally:
        stop.set()
        await beat
        await redis.aclose()


async def run_heartbeat(redis: Redis, settings: Settings, name: str, stop: asyncio.Event) -> None:
    ops = OpsStore(redis, settings.GATEWAY_KEY_PREFIX)
    interval, ttl = settings.WORKER_HEARTBEAT_INTERVAL, settings.WORKER_HEARTBEAT_TTL
    try:
        while not stop.is_set():
            try:
                await ops.beat(name, ttl)
            except (RedisError, OSError) as exc:
                log.warning("heartbeat_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await ops.leave(name)
