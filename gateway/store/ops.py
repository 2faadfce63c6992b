"""Operations keys: worker heartbeats, and the read-only figures behind /readyz and /metrics.

Key ``workers`` (map: ``gateway.store.keys``).

``workers`` scores each live worker (its consumer name) by its last heartbeat (epoch ms). A beat
also drops members older than the TTL and renews the key's TTL, so the set never outlives the
last worker and a dead worker disappears without anyone cleaning up after it.

Every gauge is computed at scrape time from Redis with O(1) or O(log n) commands (ZCARD, ZRANGE 0 0,
XLEN, XPENDING summary, ZCOUNT, TIME): a fixed number of them in two pipelined round trips, whatever
the number of subscriptions, requests or deliveries; nothing is scanned.

Breaker states are counted from ``breakers:open`` and ``breakers:half_open``, which the delivery
scripts keep in the same step as the breaker (``gateway.store.admission``): ZCOUNT from Redis's own
"now", as each entry is scored by when its breaker hash expires; closed is every other subscription.
Reading each breaker would cost one command per subscription; a short-lived cache of that read would
still scan once per TTL and be stale in between. The index is exact and costs a scrape two ZCOUNTs.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.infra.metrics import Gauges
from gateway.store import scripts
from gateway.store.inbox import INBOX_GROUP
from gateway.store.keys import Keys
from gateway.store.records import now_ms

BREAKER_STATES = ("open", "half_open")  # indexed; "closed" is the rest of the subscriptions


class OpsStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self._beat = scripts.load(redis, "beat")

    async def beat(self, member: str, ttl_s: float, *, now: int | None = None) -> int:
        """Record a heartbeat of worker ``member``; returns how many workers are alive."""
        alive = await self._beat(
            workers=self.keys.workers, member=member, now=now or now_ms(), ttl_ms=int(ttl_s * 1000)
        )
        return int(alive)

    async def leave(self, member: str) -> None:
        """A worker that stops cleanly says so at once instead of waiting for its TTL."""
        await self.redis.zrem(self.keys.workers, member)

    async def freshest_beat_age(self, *, now: int | None = None) -> float | None:
        """Seconds since the most recent heartbeat of any worker, None if there is none."""
        newest = await self.redis.zrange(self.keys.workers, -1, -1, withscores=True)
        if not newest:
            return None
        return max(0.0, ((now or now_ms()) - float(newest[0][1])) / 1000)

    async def gauges(self, heartbeat_ttl_s: float, *, now: int | None = None) -> Gauges:
        now = now or now_ms()
        inbox = self.keys.inbox
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.requests("pending"))
            pipe.zrange(self.keys.requests("pending"), 0, 0, withscores=True)
            pipe.xlen(inbox)
            pipe.xlen(self.keys.inbox_failed)
            pipe.zcard(self.keys.queue)
            pipe.zcard(self.keys.deliveries_status("failed"))
            pipe.zcount(self.keys.workers, now - int(heartbeat_ttl_s * 1000), "+inf")
            pipe.zcard(self.keys.subs)
            pipe.zcard(self.keys.archive)
            pipe.zrange(self.keys.archive, 0, 0, withscores=True)
            pipe.time()
            (
                pending,
                oldest,
                backlog,
                failed,
                queue,
                dead,
                alive,
                subs,
                history,
                history_oldest,
                server_now,
            ) = await pipe.execute()
        g = Gauges(
            pending_requests=int(pending),
            oldest_pending_age_s=max(0.0, (now - float(oldest[0][1])) / 1000) if oldest else 0.0,
            inbox_backlog=int(backlog),
            inbox_failed=int(failed),
            arq_queue=int(queue),
            dead_letters=int(dead),
            workers_alive=int(alive),
        )
        # Round trip two: what needs the server's clock, and XPENDING (an error without a group).
        seconds, micros = server_now
        server_ms = int(seconds) * 1000 + int(micros) // 1000
        g.history_backlog = int(history)
        if history_oldest:  # scored by Redis' clock (lua/lib/archive.lua)
            g.history_oldest_age_s = max(0.0, (server_ms - float(history_oldest[0][1])) / 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in BREAKER_STATES:
                pipe.zcount(self.keys.breakers(state), server_ms, "+inf")
            pipe.xpending(inbox, INBOX_GROUP)
            *indexed, summary = await pipe.execute(raise_on_error=False)
        for reply in indexed:
            if isinstance(reply, Exception):
                raise reply
        g.inbox_unacked = 0 if isinstance(summary, ResponseError) else int(summary.get("pending") or 0)
        g.breakers = _breakers(int(subs), [int(n) for n in indexed])
        return g


def _breakers(subs: int, indexed: list[int]) -> dict[str, int]:
    counts = dict(zip(BREAKER_STATES, indexed, strict=True))
    return {"closed": max(0, subs - sum(indexed)), **counts}
