"""What the API checks before it submits upstream: Idempotency-Key claims (``idem:``) and the
upstream rate limiter shared by every process (``rate:``)."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.store.keys import Keys
from gateway.store.records import now_ms
from gateway.store.scripts import ScriptCall


class LimitsMixin:
    redis: Redis
    keys: Keys
    _idem_claim: ScriptCall
    _rate: ScriptCall

    async def idempotency_claim(self, key_id: str, body_hash: str, lease_s: float) -> list[str]:
        """Claim an Idempotency-Key: ``['claimed']`` or what the first caller left there."""
        raw = await self._idem_claim(
            idem=self.keys.idem(key_id), body_hash=body_hash, lease_ms=int(lease_s * 1000)
        )
        return [str(x) for x in raw]

    async def idempotency_finish(self, key_id: str, status: int, response: str, ttl_s: int) -> None:
        key = self.keys.idem(key_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": "done", "status": status, "response": response})
            pipe.expire(key, ttl_s)
            await pipe.execute()

    async def idempotency_release(self, key_id: str) -> None:
        """Forget a claim whose request failed transiently, so that a retry may go ahead."""
        await self.redis.delete(self.keys.idem(key_id))

    async def rate_acquire(self, name: str, limit: int, window_s: float, member: str) -> float:
        """Take one slot of a limiter shared by all processes; seconds to wait if none is free."""
        wait_ms = await self._rate(
            limiter=self.keys.rate(name),
            now=now_ms(),
            limit=limit,
            window=int(window_s * 1000),
            member=member,
        )
        return int(wait_ms) / 1000
