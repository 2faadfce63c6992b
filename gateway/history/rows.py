"""How history's rows become SQL parameters, and the conversions both directions share: epoch ms
to ``timestamptz`` and back, JSON for ``jsonb``, and what PostgreSQL cannot hold."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from gateway.domain.history import AttemptRow, DeliveryRow, EventRow, RequestRow

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
    return (e.event_id, ts(e.created_at), e.api_id, e.type, to_json(e.body))


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
