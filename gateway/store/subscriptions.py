"""Subscriptions: their records, type sets and secrets.

Fan-out matches subscriptions through ``subs:type:{t}`` sets (plus ``subs:type:*``): one SUNION per
event, never a scan. ``*`` does not match operator events (``subscription.*``); those go only to
subscriptions that name them.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis

from gateway.domain.signing import new_webhook_secret
from gateway.domain.subscriptions import Subscription
from gateway.store.events import to_json
from gateway.store.keys import Keys
from gateway.store.records import now_ms
from gateway.store.scripts import ScriptCall


async def _pairs(reply: Awaitable[list[Any]]) -> list[tuple[str, str]]:
    flat = await reply
    return [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]


class SubscriptionsMixin:
    redis: Redis
    keys: Keys
    retention: int
    _sub_create: ScriptCall
    _sub_delete: ScriptCall
    _sub_enable: ScriptCall
    _sub_match: ScriptCall
    _sub_rotate: ScriptCall

    async def create_subscription(
        self,
        *,
        url: str,
        event_types: list[str],
        description: str,
        retry_schedule: list[float] | None,
        rate_limit: float | None,
        now: int | None = None,
    ) -> Subscription:
        sub_id = "sub_" + secrets.token_hex(12)
        at = now or now_ms()
        fields: dict[str, str | int] = {
            "id": sub_id,
            "url": url,
            "event_types": to_json(event_types),
            "description": description,
            "secrets": to_json([{"secret": new_webhook_secret(), "expires_at": 0}]),
            "retry_schedule": to_json(retry_schedule) if retry_schedule is not None else "",
            "rate_limit": "" if rate_limit is None else str(rate_limit),
            "status": "active",
            "created_at": at,
            "updated_at": at,
        }
        flat: list[str | int] = [v for pair in fields.items() for v in pair]
        await self._sub_create(
            p=self.keys.prefix, id=sub_id, now=at, event_types=to_json(event_types), fields=flat
        )
        return Subscription.from_record({k: str(v) for k, v in fields.items()})

    async def get_subscription(self, sub_id: str) -> Subscription | None:
        data: dict[str, str] = await self.redis.hgetall(self.keys.sub(sub_id))  # type: ignore[misc]
        return Subscription.from_record(data) if data else None

    async def list_subscriptions(self, offset: int, limit: int) -> tuple[int, list[Subscription]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.subs)
            pipe.zrevrange(self.keys.subs, offset, offset + limit - 1)
            total, ids = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for sub_id in ids:
                pipe.hgetall(self.keys.sub(sub_id))
            records = await pipe.execute()
        return int(total), [Subscription.from_record(r) for r in records if r]

    async def delete_subscription(self, sub_id: str) -> bool:
        return bool(await self._sub_delete(p=self.keys.prefix, id=sub_id, retention=self.retention))

    async def enable_subscription(self, sub_id: str, *, now: int | None = None) -> int:
        """Make a disabled subscription active again: 1, 0 when missing, -1 when already active."""
        return int(await self._sub_enable(p=self.keys.prefix, id=sub_id, now=now or now_ms()))

    async def rotate_secret(self, sub_id: str, grace_s: float, *, now: int | None = None) -> str | None:
        """Give a subscription a new primary secret; the old one signs too for ``grace_s``."""
        secret = new_webhook_secret()
        rotated = await self._sub_rotate(
            p=self.keys.prefix, id=sub_id, secret=secret, now=now or now_ms(), grace_ms=int(grace_s * 1000)
        )
        return secret if rotated else None

    async def matching_subscriptions(self, event_type: str) -> list[tuple[str, str]]:
        """(id, url) of the active subscriptions that want ``event_type``."""
        return await self.matching_subscriptions_soon(event_type)

    def matching_subscriptions_soon(self, event_type: str) -> Awaitable[list[tuple[str, str]]]:
        """``matching_subscriptions``, its script called now: over a batching client it joins the
        batch being filled (alongside the caller's next script) without a task of its own."""
        include_star = "0" if event_type.startswith("subscription.") else "1"
        # Read-only: the callbacks of one batch with the same event type share one reply.
        return _pairs(self._sub_match(p=self.keys.prefix, event_type=event_type, include_star=include_star))
