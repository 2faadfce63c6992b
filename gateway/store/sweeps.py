"""The periodic sweeps: deadlines that passed, parked callbacks past their grace, index trimming."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.store.keys import Keys
from gateway.store.records import STATUSES, now_ms
from gateway.store.scripts import ScriptCall


class SweepsMixin:
    redis: Redis
    keys: Keys
    retention: int
    _expire: ScriptCall
    _release: ScriptCall

    async def expire_due(self, limit: int = 1000) -> int:
        """Time out pending requests whose deadline passed; returns how many were due."""
        return int(await self._expire(p=self.keys.prefix, now=now_ms(), limit=limit))

    async def release_unmatched(self, limit: int = 1000) -> int:
        """Send parked callbacks past their grace period back for a final correlation."""
        return int(await self._release(p=self.keys.prefix, now=now_ms(), limit=limit))

    async def trim_indexes(self) -> None:
        """Drop index entries older than the retention period (the records themselves expire)."""
        cutoff = now_ms() - self.retention * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in (*(self.keys.requests(s) for s in STATUSES), self.keys.unmatched_log):
                pipe.zremrangebyscore(index, "-inf", cutoff)
            await pipe.execute()
