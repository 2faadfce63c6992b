"""The archive: what changed in Redis and is still to be copied to PostgreSQL (the history outbox).

The scripts that change a request's history (submit, emit, record, rearm) add the request
(``r:{api_id}``) or an event of no request (``e:{event_id}``) to the ``archive`` zset, scored by
Redis' clock (lua/lib/archive.lua). The archiver (workers/archive.py) takes the members that have
not changed for the history delay, reads each one's whole tree here (the request, its events, their
deliveries and attempt logs: ``Tree``), writes the trees to PostgreSQL, then ``release``s them: a
member is removed only if its score did not move meanwhile, so no change is ever lost between the
read and the removal, and a crash anywhere only makes the copy happen again (the writes are
idempotent upserts). A settled tree (final request, no delivery pending) then leaves Redis: see
lua/archive_release.lua.

The zset is also the outbox's size: while PostgreSQL is down it grows, and at
``GATEWAY_HISTORY_BACKLOG_MAX`` the API refuses new work (gateway.services.backlog).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.domain.deliveries import AttemptLog, DeliveryRecord
from gateway.domain.events import EventJson, event_id_for
from gateway.domain.history import (
    FINAL_REQUEST,
    AttemptRow,
    CallbackRow,
    DeliveryRow,
    EventRow,
    RequestRow,
    Tree,
    callback_key_time,
)
from gateway.store import scripts
from gateway.store.keys import Keys
from gateway.store.records import STATUSES, decode_record


@dataclass(slots=True)
class Changed:
    """One archive member as read: its tree, and what its release needs."""

    member: str
    score: str
    tree: Tree
    api_id: str
    status: str  # the request's, '' for an event of no request


def _ms(iso: str) -> int:
    return round(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# Trees one script reads or releases at once: a script holds Redis, and every ingest and delivery
# waits behind it. SLOWLOG timed about 80 µs a tree read and 100 µs a tree released (its own
# overhead included): 50 trees hold Redis about 4-5 ms (docs/performance.md, "History, fourth pass").
READ_CHUNK = 50


def _pairs(flat: list[str]) -> dict[str, str]:
    """A hash as Lua's HGETALL answers it (``[field, value, ...]``) as a dict."""
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def _callbacks(tree: Tree, lines: list[str]) -> list[CallbackRow]:
    """A tree's callback log (lua/lib/callback_log.lua) as rows, each with its event's payload."""
    data = {e.event_id: e.body.get("data") for e in tree.events}
    submitted = tree.request.submitted_at if tree.request is not None else None
    api_id = tree.request.api_id if tree.request is not None else None
    rows: dict[tuple[str, int], CallbackRow] = {}
    for line in lines:
        cb, at, handled, sv, outcome, kind = line.split("\t")
        received = int(at)
        eid = event_id_for(cb)
        payload = data.get(eid)
        # The first line of a receipt wins: handling one again (a worker that died) logs it again.
        rows.setdefault(
            (cb, received),
            CallbackRow(
                callback_id=cb,
                received_at=received,
                api_id=api_id,
                event_id=eid,
                handled_at=int(handled),
                kind=kind,
                outcome=outcome,
                signature_version=sv or None,
                early=submitted is not None and received < submitted,
                payload=payload if isinstance(payload, dict) else None,
            ),
        )
    return sorted(rows.values(), key=callback_key_time)


def _target_name(target: dict[str, str]) -> str:
    return str(target.get("url") or target.get("queue") or target.get("type") or "")


class ArchiveStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._due = scripts.load(redis, "archive_due", read_only=True)
        self._read = scripts.load(redis, "archive_read", read_only=True)
        self._release = scripts.load(redis, "archive_release")
        self._rehydrate = scripts.load(redis, "rehydrate")
        self._erase = scripts.load(redis, "erase")

    async def backlog(self) -> int:
        """Members waiting to be copied (the outbox's size)."""
        return int(await self.redis.zcard(self.keys.archive))

    async def backfill(self, chunk: int = 1000) -> int:
        """Once per Redis (a flag key): mark every request and unmatched callback that Redis held
        before history existed, so the archiver copies them too (an upgrade loses nothing from the
        lists). Safe to repeat after a crash (ZADD NX); returns how many were marked."""
        keys = self.keys
        if await self.redis.exists(keys.archive_backfilled):
            return 0
        seconds, micros = await self.redis.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        marked = 0
        sources = [(keys.requests(s), "r:") for s in STATUSES] + [(keys.unmatched_log, "e:")]
        for index, kind in sources:
            batch: dict[str, int] = {}
            async for member, _ in self.redis.zscan_iter(index, count=chunk):
                batch[kind + str(member)] = now
                if len(batch) >= chunk:
                    marked += int(await self.redis.zadd(keys.archive, batch, nx=True))
                    batch = {}
            if batch:
                marked += int(await self.redis.zadd(keys.archive, batch, nx=True))
        await self.redis.set(keys.archive_backfilled, now)
        return marked

    async def members(self, limit: int) -> list[str]:
        """The members waiting (oldest first), at most ``limit``."""
        return [str(m) for m in await self.redis.zrange(self.keys.archive, 0, limit - 1)]

    async def oldest_age_ms(self) -> int | None:
        """How long the oldest waiting change has waited, by Redis' clock; None when none waits."""
        oldest = await self.redis.zrange(self.keys.archive, 0, 0, withscores=True)
        if not oldest:
            return None
        seconds, micros = await self.redis.time()
        return max(0, int(seconds) * 1000 + int(micros) // 1000 - int(oldest[0][1]))

    async def due(self, delay_ms: int, limit: int) -> list[tuple[str, str]]:
        raw = await self._due(archive_key=self.keys.archive, delay_ms=delay_ms, limit=limit)
        return [(str(raw[i]), str(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def read(self, members: list[tuple[str, str]]) -> list[Changed]:
        """The trees of ``members``, READ_CHUNK to a script call (lua/archive_read.lua): a pipeline
        of a few commands per key cost the archiver ~130 µs of client CPU a tree."""
        if not members:
            return []
        names = [m for m, _ in members]
        raw: list[Any] = []
        for start in range(0, len(names), READ_CHUNK):  # no script holds Redis for long
            raw += await self._read(p=self.keys.prefix, members=names[start : start + READ_CHUNK])
        out = []
        for (member, score), (flat_record, raw_events, callback_lines) in zip(members, raw, strict=True):
            event_ids: list[str] = []
            events: dict[str, tuple[str | None, set[str]]] = {}
            deliveries: dict[str, tuple[DeliveryRecord, list[str]]] = {}
            for eid, json_text, raw_deliveries in raw_events:
                event_ids.append(eid)
                events[eid] = (json_text or None, {d[0] for d in raw_deliveries})
                for did, flat, log in raw_deliveries:
                    deliveries[did] = (_pairs(flat), log)  # type: ignore[assignment]  # a stored DeliveryRecord
            changed = self._tree(member, score, _pairs(flat_record), event_ids, events, deliveries)
            if changed.tree.request is not None or changed.tree.events:  # else: nothing left to attach to
                changed.tree.callbacks = _callbacks(changed.tree, callback_lines)
            out.append(changed)
        return out

    def _tree(
        self,
        member: str,
        score: str,
        raw_record: dict[str, str],
        event_ids: list[str],
        events: dict[str, tuple[str | None, set[str]]],
        deliveries: dict[str, tuple[DeliveryRecord, list[str]]],
    ) -> Changed:
        kind, _, ident = member.partition(":")
        api_id = ident if kind == "r" else ""
        tree = Tree()
        status = ""
        if kind == "r" and raw_record:
            record = decode_record(api_id, raw_record)
            status = record["status"]
            submitted = _int(record.get("submitted_at"), 0) or 0
            finished = _int(record.get("completed_at")) or _int(record.get("timed_out_at"))
            tree.request = RequestRow(
                api_id=api_id,
                submitted_at=submitted,
                status=status,
                resource=record.get("resource", ""),
                method=record.get("method", "POST"),
                finished_at=finished,
                metadata=json.loads(record.get("metadata") or "{}"),
                record=dict(record),
            )
        for eid in event_ids:
            raw_event, delivery_ids = events.get(eid, (None, set()))
            if raw_event is None:
                continue
            body = json.loads(raw_event)
            tree.events.append(
                EventRow(
                    event_id=eid,
                    created_at=_ms(str(body.get("created_at"))),
                    api_id=body.get("api_id") or None,
                    type=str(body.get("type", "")),
                    body=body,
                    raw=raw_event,
                )
            )
            for did in sorted(delivery_ids):
                raw_dlv, log = deliveries.get(did, ({}, []))
                if raw_dlv:
                    self._delivery(tree, raw_dlv, log, body.get("api_id") or None)
        # The order PostgreSQL reads them in (gateway.history.store.get_tree): the same answer from both.
        tree.events.sort(key=lambda e: (e.created_at, e.event_id))
        tree.deliveries.sort(key=lambda d: (d.created_at, d.delivery_id))
        tree.attempts.sort(key=lambda a: (a.at, a.delivery_id, a.cycle, a.attempt))
        pending = any(d.status == "pending" for d in tree.deliveries)
        if kind == "r":
            tree.settled = bool(raw_record) and status in FINAL_REQUEST and not pending
        else:
            tree.settled = bool(tree.events) and not pending
        return Changed(member, score, tree, api_id, status)

    def _delivery(self, tree: Tree, raw: DeliveryRecord, log: list[str], api_id: str | None) -> None:
        target: dict[str, str] = json.loads(raw.get("target") or "{}")
        did = raw["id"]
        cycle = _int(raw.get("cycle"), 0) or 0
        tree.deliveries.append(
            DeliveryRow(
                delivery_id=did,
                created_at=_int(raw.get("created_at"), 0) or 0,
                event_id=raw.get("event_id", ""),
                api_id=api_id,
                event_type=raw.get("event_type", ""),
                subscription_id=raw.get("sub") or None,
                target=target,
                status=raw.get("status", ""),
                attempts=_int(raw.get("attempts"), 0) or 0,
                cycle=cycle,
                updated_at=_int(raw.get("updated_at"), 0) or 0,
                record=raw,
            )
        )
        for line in log:
            entry = json.loads(line)
            tree.attempts.append(
                AttemptRow(
                    delivery_id=did,
                    cycle=_int(entry.get("cycle"), cycle) or 0,
                    attempt=_int(entry.get("attempt"), 0) or 0,
                    at=_ms(str(entry["at"])),
                    event_id=raw.get("event_id", ""),
                    api_id=api_id,
                    target=_target_name(target),
                    outcome=str(entry.get("outcome", "")),
                    status_code=_int(entry.get("status_code")),
                    duration_ms=entry.get("duration_ms"),
                    error=entry.get("error") or None,
                    response=entry.get("response"),
                )
            )

    async def release(self, changed: list[Changed], hot_retention_s: int, *, forget: bool = True) -> int:
        """Remove what was copied and did not change since; with ``forget``, let settled trees
        leave Redis."""
        removed = 0
        for start in range(0, len(changed), READ_CHUNK):  # as read: no script holds Redis for long
            items: list[str] = []
            for c in changed[start : start + READ_CHUNK]:
                items += [c.member, c.score, "1" if forget and c.tree.settled else "0", c.api_id, c.status]
            removed += int(
                await self._release(p=self.keys.prefix, hot_ms=hot_retention_s * 1000, items=items)
            )
        return removed

    async def rehydrate(
        self, record: DeliveryRecord, log: list[AttemptLog], event: EventJson, retention_s: int
    ) -> bool:
        """Put a delivery Redis has let go back from PostgreSQL's copy, with its log and event (for
        a retry or a replay); False when Redis still had it."""
        fields = [v for pair in record.items() for v in pair]
        put = await self._rehydrate(
            p=self.keys.prefix,
            ret=retention_s,
            id=record["id"],
            event_id=record["event_id"],
            event_json=json.dumps(event, separators=(",", ":"), ensure_ascii=False),
            log=json.dumps(log, separators=(",", ":"), ensure_ascii=False),
            fields=fields,
        )
        return bool(put)

    async def erase(self, api_id: str, tree: Tree, now_ms: int) -> bool:
        """Erase the payloads of a finished request from Redis (lua/erase.lua); False if Redis no
        longer holds its record (PostgreSQL's copy is all there is)."""
        k = self.keys
        events = [k.evt(e.event_id) for e in tree.events]
        logs = [k.dlvlog(d.delivery_id) for d in tree.deliveries]
        erased = await self._erase(
            p=k.prefix, api_id=api_id, now=now_ms, n_events=len(events), members=events + logs
        )
        return bool(erased)
