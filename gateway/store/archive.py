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
from gateway.domain.events import EventJson
from gateway.domain.history import FINAL_REQUEST, AttemptRow, DeliveryRow, EventRow, RequestRow, Tree
from gateway.store import scripts
from gateway.store.keys import Keys
from gateway.store.records import STATUSES, decode_record


@dataclass(slots=True)
class Changed:
    """One archive member as read: its tree, and the keys Redis may forget once it is settled."""

    member: str
    score: str
    tree: Tree
    api_id: str
    status: str  # the request's, '' for an event of no request
    index_members: list[tuple[str, str]]  # (index key, member) to remove once settled
    keys: list[str]  # to expire within the hot retention once settled


def _ms(iso: str) -> int:
    return round(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _target_name(target: dict[str, str]) -> str:
    return str(target.get("url") or target.get("queue") or target.get("type") or "")


class ArchiveStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self._due = scripts.load(redis, "archive_due", read_only=True)
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
        """The trees of ``members``, in three round trips whatever their number."""
        keys = self.keys
        request_ids = [m[2:] for m, _ in members if m.startswith("r:")]
        async with self.redis.pipeline(transaction=False) as pipe:
            for api_id in request_ids:
                pipe.hgetall(keys.req(api_id))
                pipe.lrange(keys.reqevents(api_id), 0, -1)
            first = iter(await pipe.execute())
        records: list[dict[str, str]] = []
        event_ids: list[list[str]] = []
        for member, _ in members:
            if member.startswith("r:"):
                records.append(next(first) or {})
                event_ids.append([str(i) for i in next(first)])
            else:  # an event of no request: the event is the whole tree
                records.append({})
                event_ids.append([member[2:]])
        flat_events = [e for ids in event_ids for e in ids]
        async with self.redis.pipeline(transaction=False) as pipe:
            for eid in flat_events:
                pipe.get(keys.evt(eid))
                pipe.smembers(keys.evtdlv(eid))
            second = await pipe.execute()
        events = {eid: (second[2 * n], second[2 * n + 1]) for n, eid in enumerate(flat_events)}
        delivery_ids = sorted({d for _, dl in events.values() for d in dl})
        async with self.redis.pipeline(transaction=False) as pipe:
            for did in delivery_ids:
                pipe.hgetall(keys.dlv(did))
                pipe.lrange(keys.dlvlog(did), 0, -1)
            third = await pipe.execute()
        deliveries = {did: (third[2 * n], third[2 * n + 1]) for n, did in enumerate(delivery_ids)}
        out = []
        for (member, score), record, ids in zip(members, records, event_ids, strict=True):
            out.append(self._tree(member, score, record, ids, events, deliveries))
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
        keys = self.keys
        kind, _, ident = member.partition(":")
        api_id = ident if kind == "r" else ""
        tree = Tree()
        expiring: list[str] = []
        index_members: list[tuple[str, str]] = []
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
            expiring.append(keys.reqevents(api_id))
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
                )
            )
            dead_letter = False
            for did in sorted(delivery_ids):
                raw_dlv, log = deliveries.get(did, ({}, []))
                if not raw_dlv:
                    continue
                self._delivery(tree, raw_dlv, log, body.get("api_id") or None)
                if raw_dlv.get("status") == "failed":
                    # A dead letter stays in Redis, listed, with its event: it is there to be
                    # retried (it leaves with the retention, as before).
                    dead_letter = True
                    continue
                expiring += [keys.dlv(did), keys.dlvlog(did)]
                index_members += self._delivery_indexes(raw_dlv)
            if not dead_letter:
                expiring += [keys.evt(eid), keys.evtdlv(eid)]
            if tree.events[-1].type == "callback.unmatched":
                index_members.append((keys.unmatched_log, eid))
        # The order PostgreSQL reads them in (gateway.history.store.get_tree): the same answer from both.
        tree.events.sort(key=lambda e: (e.created_at, e.event_id))
        tree.deliveries.sort(key=lambda d: (d.created_at, d.delivery_id))
        tree.attempts.sort(key=lambda a: (a.at, a.delivery_id, a.cycle, a.attempt))
        pending = any(d.status == "pending" for d in tree.deliveries)
        if kind == "r":
            tree.settled = bool(raw_record) and status in FINAL_REQUEST and not pending
        else:
            tree.settled = bool(tree.events) and not pending
        return Changed(member, score, tree, api_id, status, index_members, expiring)

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

    def _delivery_indexes(self, raw: DeliveryRecord) -> list[tuple[str, str]]:
        keys, did = self.keys, raw["id"]
        out = [
            (keys.deliveries, did),
            (keys.deliveries_type(raw.get("event_type", "")), did),
            (keys.deliveries_status(raw.get("status", "")), did),
        ]
        if raw.get("sub"):
            out.append((keys.deliveries_sub(raw["sub"]), did))
        return out

    async def release(self, changed: list[Changed], hot_retention_s: int, *, forget: bool = True) -> int:
        """Remove what was copied and did not change since; with ``forget``, let settled trees
        leave Redis."""
        items: list[str | int] = []
        for c in changed:
            settled = "1" if forget and c.tree.settled else "0"
            items += [c.member, c.score, settled, c.api_id, c.status]
            items.append(len(c.index_members))
            for key, member in c.index_members:
                items += [key, member]
            items.append(len(c.keys))
            items += c.keys
        if not items:
            return 0
        return int(await self._release(p=self.keys.prefix, hot_ms=hot_retention_s * 1000, items=items))

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
