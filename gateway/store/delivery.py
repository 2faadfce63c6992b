"""Deliveries and events: the scripts of the fan-out path (map in gateway.store)."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from gateway.store.core import now_ms

# KEYS: evt, reqevents (or ''), deliveries zset, then one dlv key per delivery
# ARGV: event_id, event_json, retention_s, now_ms, then target_json per delivery
_EMIT = """
local created = redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3])
if created then
  if KEYS[2] ~= '' then
    redis.call('RPUSH', KEYS[2], ARGV[1])
    redis.call('EXPIRE', KEYS[2], ARGV[3])
  end
  for i = 4, #KEYS do
    local id = string.match(KEYS[i], 'dlv:(.*)$')
    redis.call('HSET', KEYS[i], 'id', id, 'event_id', ARGV[1], 'target', ARGV[i + 1],
               'status', 'pending', 'attempts', 0, 'created_at', ARGV[4])
    redis.call('EXPIRE', KEYS[i], ARGV[3])
    redis.call('ZADD', KEYS[3], ARGV[4], id)
  end
end
local states = {}
for i = 4, #KEYS do states[#states + 1] = redis.call('HGET', KEYS[i], 'status') or 'missing' end
return {created and 1 or 0, states}
"""

# Record one delivery attempt. KEYS: dlv. ARGV: status, attempts, last_code, last_error, at_ms,
# next_at_ms. Only a delivery that is still pending changes: a late duplicate attempt result cannot
# turn a succeeded delivery back into a failed one.
_RECORD = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return 'missing' end
if cur ~= 'pending' then return cur end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'attempts', ARGV[2], 'last_code', ARGV[3],
           'last_error', ARGV[4], 'last_attempt_at', ARGV[5], 'next_attempt_at', ARGV[6])
return ARGV[1]
"""


class DeliveryStore:
    """Events, delivery records and their attempts."""

    def __init__(self, redis: Redis, prefix: str, *, retention: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.retention = retention
        self._emit = redis.register_script(_EMIT)
        self._record = redis.register_script(_RECORD)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def emit(
        self,
        event: dict[str, Any],
        deliveries: list[tuple[str, dict[str, Any]]],
    ) -> tuple[bool, list[str]]:
        """Store an event and its delivery records once. Returns (created, delivery states)."""
        event_id = str(event["id"])
        api_id = event.get("api_id")
        keys = [
            self.key("evt", event_id),
            self.key("reqevents", api_id) if api_id else "",
            self.key("deliveries"),
            *(self.key("dlv", dlv_id) for dlv_id, _ in deliveries),
        ]
        args: list[str | int] = [
            event_id,
            json.dumps(event, separators=(",", ":"), ensure_ascii=False),
            self.retention,
            now_ms(),
            *(json.dumps(t, separators=(",", ":")) for _, t in deliveries),
        ]
        created, states = await self._emit(keys=keys, args=args)
        return bool(created), [str(s) for s in states]

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
        args: list[str | int] = [
            status,
            attempts,
            code if code is not None else "",
            error[:500],
            now_ms(),
            next_at if next_at is not None else "",
        ]
        return str(await self._record(keys=[self.key("dlv", delivery_id)], args=args))

    async def get_delivery(self, delivery_id: str) -> dict[str, str]:
        data: dict[str, str] = await self.redis.hgetall(self.key("dlv", delivery_id))  # type: ignore[misc]
        return data

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.key("evt", event_id))
        return json.loads(raw) if raw else None
