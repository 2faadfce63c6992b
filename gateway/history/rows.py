"""How history's rows become SQL parameters, and the conversions both directions share: epoch ms
to ``timestamptz`` and back, JSON for ``jsonb``, and what PostgreSQL cannot hold."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from gateway.domain.history import (
    FINAL_REQUEST,
    AttemptRow,
    CallbackRow,
    DeliveryRow,
    EventRow,
    RequestRow,
    Tree,
)

if TYPE_CHECKING:
    from asyncpg import Record

# What ``timestamptz`` and Python's datetime both hold: a time filter outside is clamped to it.
_MIN_MS, _MAX_MS = -62_135_596_800_000, 253_402_300_799_999
MAX_ROWS = 2**62  # OFFSET and LIMIT are bigints


def ts(ms: int | None) -> dt.datetime | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(min(max(ms, _MIN_MS), _MAX_MS) / 1000, tz=dt.UTC)


def storable(*values: str | None) -> bool:
    """PostgreSQL's text cannot hold NUL: an id or filter with one matches nothing (Redis' keys can)."""
    return not any(v and "\x00" in v for v in values)


def ms(value: dt.datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * 1000)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def request_args(r: RequestRow) -> tuple[Any, ...]:
    return (
        r.api_id,
        ts(r.submitted_at),
        r.status,
        r.resource,
        r.method,
        ts(r.finished_at),
        to_json(r.metadata),
        to_json(r.record),
        ts(int(r.record["erased_at"])) if r.record.get("erased_at") else None,
    )


def event_args(e: EventRow) -> tuple[Any, ...]:
    return (e.event_id, ts(e.created_at), e.api_id, e.type, e.raw if e.raw is not None else to_json(e.body))


def delivery_args(d: DeliveryRow) -> tuple[Any, ...]:
    return (
        d.delivery_id,
        ts(d.created_at),
        d.event_id,
        d.api_id,
        d.event_type,
        d.subscription_id,
        to_json(d.target),
        d.status,
        d.attempts,
        d.cycle,
        ts(d.updated_at),
        to_json(d.record),
    )


def attempt_args(a: AttemptRow) -> tuple[Any, ...]:
    return (
        a.delivery_id,
        a.cycle,
        a.attempt,
        ts(a.at),
        a.event_id,
        a.api_id,
        a.target,
        a.outcome,
        a.status_code,
        a.duration_ms,
        a.error,
        a.response,
    )


def callback_args(c: CallbackRow) -> tuple[Any, ...]:
    return (
        c.callback_id,
        ts(c.received_at),
        c.api_id,
        c.event_id,
        ts(c.handled_at),
        c.kind,
        c.outcome,
        c.signature_version,
        c.early,
        None if c.payload is None else to_json(c.payload),
    )


def tree_of(
    request: Record,
    events: list[Record],
    deliveries: list[Record],
    attempts: list[Record],
    callbacks: list[Record],
) -> Tree:
    """A request's tree from its rows as PostgreSQL returns them (``SELECT *``)."""
    record = json.loads(request["record"])
    if request["erased_at"] is not None:
        record["erased_at"] = str(at_ms(request["erased_at"]))  # as Redis keeps it (ms)
    return Tree(
        request=RequestRow(
            api_id=request["api_id"],
            submitted_at=at_ms(request["submitted_at"]),
            status=request["status"],
            resource=request["resource"],
            method=request["method"],
            finished_at=ms(request["finished_at"]),
            metadata=json.loads(request["metadata"]),
            record=record,
        ),
        events=[
            EventRow(r["event_id"], at_ms(r["created_at"]), r["api_id"], r["type"], json.loads(r["body"]))
            for r in events
        ],
        deliveries=[
            DeliveryRow(
                delivery_id=r["delivery_id"],
                created_at=at_ms(r["created_at"]),
                event_id=r["event_id"],
                api_id=r["api_id"],
                event_type=r["event_type"],
                subscription_id=r["subscription_id"],
                target=json.loads(r["target"]),
                status=r["status"],
                attempts=r["attempts"],
                cycle=r["cycle"],
                updated_at=at_ms(r["updated_at"]),
                record=json.loads(r["record"]),
            )
            for r in deliveries
        ],
        attempts=[
            AttemptRow(
                delivery_id=r["delivery_id"],
                cycle=r["cycle"],
                attempt=r["attempt"],
                at=at_ms(r["at"]),
                event_id=r["event_id"],
                api_id=r["api_id"],
                target=r["target"],
                outcome=r["outcome"],
                status_code=r["status_code"],
                duration_ms=r["duration_ms"],
                error=r["error"],
                response=r["response"],
            )
            for r in attempts
        ],
        callbacks=[
            CallbackRow(
                callback_id=r["callback_id"],
                received_at=at_ms(r["received_at"]),
                api_id=r["api_id"],
                event_id=r["event_id"],
                handled_at=at_ms(r["handled_at"]),
                kind=r["kind"],
                outcome=r["outcome"],
                signature_version=r["signature_version"],
                early=r["early"],
                payload=None if r["payload"] is None else json.loads(r["payload"]),
            )
            for r in callbacks
        ],
        settled=request["status"] in FINAL_REQUEST and all(r["status"] != "pending" for r in deliveries),
    )


def at_ms(value: dt.datetime) -> int:
    return round(value.timestamp() * 1000)
