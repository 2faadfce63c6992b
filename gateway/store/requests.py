"""Requests: submitting one (the record, its indexes, deadline and ref link, in one script) and
reading them back for the status and list APIs.

Deadlines: one FIFO list ``due:{timeout_s}`` per timeout value, in submit order, so each list is
in deadline order (deadline = ``a`` + timeout); the ``due`` zset holds each list's head deadline.
An entry costs a list element (~45 B) instead of a skiplist node (~140 B); a finished request's
entry stays until its deadline and is then popped and skipped.

Ref links: ``refs:{hour}:{h}`` hashes, ``h`` the first 3 hex digits of sha1(ref), map ref ->
api_id. Hourly generations expire whole (retention after their last write) and 4,096 buckets keep
each small enough for Redis' listpack encoding (~60 B an entry, against ~180 B for a key of its own
with a TTL). Looking a ref up walks the live hours, newest first.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from gateway.domain.events import EventJson
from gateway.domain.signing import new_webhook_secret
from gateway.store.keys import Keys
from gateway.store.records import (
    DEFAULTS,
    FIELDS,
    NewRequest,
    RequestRecord,
    decode_record,
    now_ms,
    pack_targets,
    packed_id,
    unpack_targets,
)
from gateway.store.scripts import ScriptCall


def _record_fields(req: NewRequest, submitted: int) -> list[str | int]:
    """The record's field/value pairs, defaults left out."""
    fields: dict[str, str | int] = {"r": req.resource, "a": submitted}
    if req.method != "POST":
        fields["m"] = req.method
    if req.metadata:
        fields["d"] = json.dumps(req.metadata, separators=(",", ":"))
    if req.targets:
        fields["t"] = pack_targets(req.targets)
    if req.traceparent:
        fields["p"] = req.traceparent
    if req.status != "pending":
        fields["s"] = req.status
    if req.upstream_error:
        fields["e"] = req.upstream_error
    return [v for pair in fields.items() for v in pair]


class RequestsMixin:
    redis: Redis
    keys: Keys
    inbox: str
    retention: int
    link_ttl: int
    _submit: ScriptCall

    async def save_request(self, req: NewRequest) -> bool:
        submitted = now_ms()
        keys = self.keys
        submit = self._submit(
            req=keys.req(req.api_id),
            requests=keys.requests(req.status),
            due=keys.due,
            due_queue=keys.due_queue(req.timeout_s),
            inbox=self.inbox,
            unmatched=keys.unmatched,
            park_api=keys.park("api:" + req.api_id),
            park_ref=keys.park("ref:" + req.ref) if req.ref else "",
            ref_bucket=keys.refs(req.ref, submitted) if req.ref else "",
            archive_key=keys.archive,
            retention=self.link_ttl,
            api_id=req.api_id,
            submitted=submitted,
            deadline=submitted + req.timeout_s * 1000,
            timeout=req.timeout_s,
            ref=req.ref,
            packed_id=packed_id(req.api_id),
            fields=_record_fields(req, submitted),
        )
        return bool(await submit)

    async def request_fields(self, api_id: str, *fields: str) -> list[str | None]:
        """Fields of a request under their logical names (``FIELDS``); all None if there is none."""
        raw: list[str | None] = await self.redis.hmget(  # type: ignore[misc]
            self.keys.req(api_id), ["a", *(FIELDS.get(f, f) for f in fields)]
        )
        if raw[0] is None:
            return [None] * len(fields)
        values: list[str | None] = []
        for name, value in zip(fields, raw[1:], strict=True):
            value = value if value is not None else DEFAULTS.get(name)
            if name == "targets" and value is not None:
                value = json.dumps(unpack_targets(value), separators=(",", ":"))
            values.append(api_id if name == "api_id" else value)
        return values

    # --- status API -----------------------------------------------------------------------

    async def get_request(self, api_id: str) -> tuple[RequestRecord, list[EventJson]] | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.req(api_id))
            pipe.lrange(self.keys.reqevents(api_id), 0, -1)
            record, event_ids = await pipe.execute()
        if not record:
            return None
        events: list[EventJson] = []
        if event_ids:
            raw = await self.redis.mget([self.keys.evt(e) for e in event_ids])
            events = [json.loads(r) for r in raw if r]
        return decode_record(api_id, record), events

    async def webhook_secret(self, configured: str | None) -> str:
        """The secret for per-request webhook targets: configured, else created once and kept."""
        if configured:
            return configured
        key = self.keys.webhook_secret
        await self.redis.set(key, new_webhook_secret(), nx=True)
        value = await self.redis.get(key)
        return str(value)
