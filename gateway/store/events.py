"""Events and delivery records: what the deliveries API reads and re-arms.

A delivery has a *cycle* (0, then +1 for each manual retry or replay) and an attempt counter within
the cycle. The retry job of attempt n carries (cycle, n) and does nothing when the record has moved
on, so a duplicate job (a crash between attempt and ack) can never add an attempt.

Index zsets (``deliveries``, ``deliveries:status|sub|type:``) score members by the delivery's
``created_at`` (ms). Retention needs no scan: the hash and its log carry a TTL, and every write or
read of an index first drops the entries older than the retention with one ``ZREMRANGEBYSCORE``
(O(log n + expired)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.domain.deliveries import AttemptLog, DeliveryRecord
from gateway.domain.events import EventJson
from gateway.store.arqjobs import deliver_payload
from gateway.store.keys import Keys
from gateway.store.records import now_ms
from gateway.store.scripts import ScriptCall

__all__ = ["AttemptLog", "DeliveryQuery", "DeliveryRecord", "EventsMixin", "encode_event", "to_json"]


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    status: str = ""
    subscription: str = ""
    event_type: str = ""
    since_ms: int | None = None
    until_ms: int | None = None
    offset: int = 0
    limit: int = 20


def encode_event(event: EventJson) -> str:
    """An event as stored and as sent in a webhook body: compact JSON, UTF-8 kept as is."""
    return to_json(event)


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class EventsMixin:
    redis: Redis
    keys: Keys
    retention: int
    queue: str
    _rearm: ScriptCall
    _query: ScriptCall

    async def rearm(self, dlv_id: str, *, now: int | None = None) -> int:
        """Start a new cycle of a finished delivery. New cycle, or -1 pending, -2 missing,
        -4 its event expired."""
        for _ in range(5):
            cycle = await self.redis.hget(self.keys.dlv(dlv_id), "cycle")  # type: ignore[misc]
            if cycle is None:
                return -2
            result = int(
                await self._rearm(
                    p=self.keys.prefix,
                    id=dlv_id,
                    expected_cycle=cycle,
                    now=now or now_ms(),
                    retention=self.retention,
                    queue=self.queue,
                    payload=deliver_payload(dlv_id, int(cycle) + 1, 1),
                )
            )
            if result != -3:
                return result
        return -1  # someone else keeps re-arming it: it is pending now

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord:
        data: DeliveryRecord = await self.redis.hgetall(self.keys.dlv(delivery_id))  # type: ignore[misc]
        return data

    async def get_deliveries(self, ids: list[str]) -> list[tuple[DeliveryRecord, list[AttemptLog]]]:
        """Records and attempt logs of ``ids`` (missing ones skipped), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for dlv_id in ids:
                pipe.hgetall(self.keys.dlv(dlv_id))
                pipe.lrange(self.keys.dlvlog(dlv_id), 0, -1)
            raw = await pipe.execute()
        out: list[tuple[DeliveryRecord, list[AttemptLog]]] = []
        for record, log in zip(raw[::2], raw[1::2], strict=True):
            if record:
                out.append((record, [json.loads(entry) for entry in log]))
        return out

    async def query(self, q: DeliveryQuery, *, now: int | None = None) -> tuple[int, list[str]]:
        """Delivery ids matching ``q``, newest first: (total, one page)."""
        keys = self.keys
        if q.subscription:
            index = keys.deliveries_sub(q.subscription)
        elif q.event_type:
            index = keys.deliveries_type(q.event_type)
        elif q.status:
            index = keys.deliveries_status(q.status)
        else:
            index = keys.deliveries
        # The index's own filter needs no check per record.
        status = "" if index.endswith(f"status:{q.status}") else q.status
        event_type = "" if q.subscription == "" else q.event_type
        total, ids = await self._query(
            p=keys.prefix,
            idx=index,
            min="-inf" if q.since_ms is None else q.since_ms,
            max="+inf" if q.until_ms is None else q.until_ms,
            status=status,
            sub="",
            etype=event_type,
            offset=q.offset,
            limit=q.limit,
            cutoff=(now or now_ms()) - self.retention * 1000,
        )
        return int(total), [str(i) for i in ids]

    async def event_deliveries(self, event_id: str) -> list[str]:
        members: set[str] = await self.redis.smembers(self.keys.evtdlv(event_id))  # type: ignore[misc]
        return sorted(members)

    async def get_event(self, event_id: str) -> EventJson | None:
        raw = await self.redis.get(self.keys.evt(event_id))
        event: EventJson | None = json.loads(raw) if raw else None
        return event
