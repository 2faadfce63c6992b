"""Admission control of a subscription's deliveries: its concurrency cap, its token bucket and its
circuit breaker (lua/lib/admit.lua, lua/lib/settle.lua).

Admission to an attempt (``admit``, inside ``begin``) checks, in one step, the concurrency cap, the
token bucket and the breaker, and only then takes a slot, a token and (half-open) the probe.
``settle`` (inside ``finish``) gives the slot back, feeds the breaker and the failing-since clock,
and disables a subscription that answered 410 or has been failing for too long.

``breakers:open`` and ``breakers:half_open`` index the breakers in that state (member: the
subscription, score: when its ``breaker:`` hash expires, ms on Redis's clock). Every script that
writes a breaker's state updates them in the same step, so /metrics counts the states with two
ZCOUNTs instead of reading every breaker. A hash that expires is a closed breaker; its entry,
scored by that expiry, stops counting at the same moment without anyone removing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.typing import EncodableT

from gateway.store.keys import Keys


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    wait_ms: int
    reason: str  # ok | probe | concurrency | rate_limited | breaker_open | breaker_probing


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window_ms: int
    min_requests: int
    failure_rate: float
    cooldown_ms: int
    disable_after_ms: int


def settle_args(ok: bool, gone: bool, policy: BreakerPolicy) -> dict[str, EncodableT]:
    """The named arguments of ``settle`` (lua/lib/settle.lua) after its slot token and clock."""
    return {
        "ok": "1" if ok else "0",
        "gone": "1" if gone else "0",
        "window": policy.window_ms,
        "min_requests": policy.min_requests,
        "failure_rate": policy.failure_rate,
        "cooldown": policy.cooldown_ms,
        "disable_after": policy.disable_after_ms,
    }


class AdmissionMixin:
    redis: Redis
    keys: Keys

    async def breaker_state(self, sub_id: str) -> str:
        state = await self.redis.hget(self.keys.breaker(sub_id), "state")  # type: ignore[misc]
        return str(state or "closed")
