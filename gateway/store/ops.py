"""Operations keys: worker heartbeats, and the read-only figures behind /readyz and /metrics.

| key            | type | TTL                          | written by           | read by           |
|----------------|------|------------------------------|----------------------|-------------------|
| ``workers``    | zset | ``WORKER_HEARTBEAT_TTL``      | each worker (beat)   | /readyz, /metrics |

``workers`` scores each live worker (its consumer name) by its last heartbeat (epoch ms). A beat
also drops members older than the TTL and renews the key's TTL, so the set never outlives the
last worker and a dead worker disappears without anyone cleaning up after it.

Every gauge is computed at scrape time from Redis with O(1) or O(log n) commands (ZCARD, ZRANGE 0 0,
XLEN, XPENDING summary, ZCOUNT), in one pipelined round trip; nothing is scanned. Breaker states
are read for at most ``BREAKER_SAMPLE`` subscriptions (one pipelined HGET each).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.store.core import INBOX_GROUP, now_ms

BREAKER_SAMPLE = 1000

# KEYS: workers. ARGV: member, now_ms, ttl_ms.
_BEAT = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""


@dataclass(slots=True)
class Gauges:
    pending_requests: int = 0
    oldest_pending_age_s: float = 0.0
    inbox_backlog: int = 0
    inbox_unacked: int = 0
    inbox_failed: int = 0
    arq_queue: int = 0
    dead_letters: int = 0
    workers_alive: int = 0
    breakers: dict[str, int] = field(default_factory=dict)


class OpsStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._beat = redis.register_script(_BEAT)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def beat(self, member: str, ttl_s: float, *, now: int | None = None) -> int:
        """Record a heartbeat of worker ``member``; returns how many workers are alive."""
        alive = await self._beat(
            keys=[self.key("workers")], args=[member, now or now_ms(), int(ttl_s * 1000)]
        )
        return int(alive)

    async def leave(self, member: str) -> None:
        """A worker that stops cleanly says so at once instead of waiting for its TTL."""
        await self.redis.zrem(self.key("workers"), member)

    async def freshest_beat_age(self, *, now: int | None = None) -> float | None:
        """Seconds since the most recent heartbeat of any worker, None if there is none."""
        newest = await self.redis.zrange(self.key("workers"), -1, -1, withscores=True)
        if not newest:
            return None
        return max(0.0, ((now or now_ms()) - float(newest[0][1])) / 1000)

    async def gauges(self, heartbeat_ttl_s: float, *, now: int | None = None) -> Gauges:
        now = now or now_ms()
        inbox = self.key("inbox")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.key("requests", "pending"))
            pipe.zrange(self.key("requests", "pending"), 0, 0, withscores=True)
            pipe.xlen(inbox)
            pipe.xlen(self.key("inbox_failed"))
            pipe.zcard(self.key("queue"))
            pipe.zcard(self.key("deliveries", "status", "failed"))
            pipe.zcount(self.key("workers"), now - int(heartbeat_ttl_s * 1000), "+inf")
            pipe.zrange(self.key("subs"), 0, BREAKER_SAMPLE - 1)
            pending, oldest, backlog, failed, queue, dead, alive, subs = await pipe.execute()
        g = Gauges(
            pending_requests=int(pending),
            oldest_pending_age_s=max(0.0, (now - float(oldest[0][1])) / 1000) if oldest else 0.0,
            inbox_backlog=int(backlog),
            inbox_failed=int(failed),
            arq_queue=int(queue),
            dead_letters=int(dead),
            workers_alive=int(alive),
        )
        g.inbox_unacked = await self._unacked(inbox)
        g.breakers = await self._breakers([str(s) for s in subs])
        return g

    async def _unacked(self, inbox: str) -> int:
        try:
            summary = await self.redis.xpending(inbox, INBOX_GROUP)
        except ResponseError:  # no stream or no group yet
            return 0
        return int(summary.get("pending") or 0)

    async def _breakers(self, subs: list[str]) -> dict[str, int]:
        counts = {"closed": 0, "open": 0, "half_open": 0}
        if not subs:
            return counts
        async with self.redis.pipeline(transaction=False) as pipe:
            for sub in subs:
                pipe.hget(self.key("breaker", sub), "state")
            states = await pipe.execute()
        for state in states:
            name = str(state or "closed")
            counts[name] = counts.get(name, 0) + 1
        return counts
