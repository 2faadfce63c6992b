"""Store operations only tests use: the standalone ``emit``, ``admit`` and ``settle`` scripts
(production runs them inside ``emit_begin``, ``begin`` and ``finish``) and ``record_attempt``.

``DeliveryStore`` here is ``gateway.store.DeliveryStore`` plus those, its scripts registered only
in the test process.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gateway.store import delivery, scripts
from gateway.store.admission import Admission, BreakerPolicy, settle_args
from gateway.store.events import to_json
from gateway.store.records import now_ms

LUA = Path(__file__).with_name("lua")


class DeliveryStore(delivery.DeliveryStore):
    def __init__(self, redis: Redis, prefix: str, *, retention: int) -> None:
        super().__init__(redis, prefix, retention=retention)
        self._emit = scripts.load(redis, "emit", directory=LUA)
        self._admit = scripts.load(redis, "admit", directory=LUA)
        self._settle = scripts.load(redis, "settle", directory=LUA)

    async def emit(
        self,
        event: dict[str, Any],
        deliveries: list[tuple[str, dict[str, Any]]],
        *,
        now: int | None = None,
    ) -> tuple[bool, list[str]]:
        """Store an event and its delivery records once. Returns (created, delivery states)."""
        triples: list[str] = []
        for dlv_id, target in deliveries:
            triples += [dlv_id, to_json(target), str(target.get("subscription") or "")]
        created, states = await self._emit(
            p=self.prefix,
            event_id=str(event["id"]),
            event_json=to_json(event),
            retention=self.retention,
            now=now or now_ms(),
            api_id=str(event.get("api_id") or ""),
            event_type=str(event.get("type") or ""),
            deliveries=triples,
        )
        return bool(created), [str(s) for s in states]

    async def admit(
        self,
        sub_id: str,
        *,
        rate: float,
        burst: int,
        cap: int,
        slot_ttl_ms: int,
        concurrency_wait_ms: int,
        now: int | None = None,
    ) -> tuple[Admission, str]:
        """Ask to attempt a delivery to ``sub_id`` now. Returns the answer and the slot token."""
        token = secrets.token_hex(8)
        allowed, wait_ms, reason = await self._admit(
            p=self.prefix,
            sub=sub_id,
            now=now or now_ms(),
            rate=rate,
            burst=burst,
            cap=cap,
            token=token,
            slot_ttl=slot_ttl_ms,
            concurrency_wait=concurrency_wait_ms,
        )
        return Admission(bool(allowed), int(wait_ms), str(reason)), token

    async def settle(
        self,
        sub_id: str,
        token: str,
        *,
        ok: bool,
        gone: bool,
        policy: BreakerPolicy,
        now: int | None = None,
    ) -> str:
        """Report an attempt's outcome. Returns the breaker state, or 'disabled'."""
        named = settle_args(ok, gone, policy)
        return str(await self._settle(p=self.prefix, sub=sub_id, token=token, now=now or now_ms(), **named))

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        status: str,
        attempts: int,
        code: int | None,
        error: str,
        next_at: int | None,
    ) -> str:
        """Record an attempt outcome without scheduling anything."""
        return await self.record(
            delivery_id, cycle=None, status=status, attempts=attempts, code=code, error=error
        )
