"""What history keeps of one request (or of one event that belongs to none): the rows the archiver
reads out of Redis and writes to PostgreSQL, and the timeline built from them.

Times are epoch milliseconds here; the history store turns them into ``timestamptz``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

from gateway.domain.deliveries import DeliveryRecord
from gateway.domain.events import EventJson

FINAL_REQUEST = frozenset({"completed", "timed_out", "failed"})


@dataclass(slots=True)
class RequestRow:
    api_id: str
    submitted_at: int
    status: str
    resource: str
    method: str
    finished_at: int | None
    metadata: dict[str, Any]
    record: dict[str, Any]  # the request as the status API shows it (JSON)


@dataclass(slots=True)
class EventRow:
    event_id: str
    created_at: int
    api_id: str | None
    type: str
    body: EventJson  # the event as delivered
    raw: str | None = None  # ``body`` as JSON text, when it was read as such (written as is)


@dataclass(slots=True)
class DeliveryRow:
    delivery_id: str
    created_at: int
    event_id: str
    api_id: str | None
    event_type: str
    subscription_id: str | None
    target: dict[str, Any]  # JSON
    status: str
    attempts: int
    cycle: int
    updated_at: int
    record: DeliveryRecord  # as Redis keeps it


@dataclass(slots=True)
class AttemptRow:
    delivery_id: str
    cycle: int
    attempt: int
    at: int
    event_id: str
    api_id: str | None
    target: str
    outcome: str
    status_code: int | None
    duration_ms: float | None
    error: str | None
    response: str | None


@dataclass(slots=True)
class CallbackRow:
    """A callback as it was received (one row per receipt: a duplicate has its own).

    ``outcome``: matched, late (after the request timed out), stale (an older status than one
    already seen), extra (a second result), replay (the same one handled again), duplicate (the
    receiver had it already), unmatched. ``early``: it came before the submit had finished (it
    waited, parked, for its request)."""

    callback_id: str
    received_at: int
    api_id: str | None
    event_id: str
    handled_at: int
    kind: str  # result | status | message | call | unknown (gateway.domain.callbacks.classify)
    outcome: str
    signature_version: str | None
    early: bool
    payload: dict[str, Any] | None  # its parameters as received (JSON); None once erased


@dataclass(slots=True)
class Tree:
    """One unit of history: a request with its events, deliveries and attempts, or an event of no
    request (``request`` None, one event). ``settled``: nothing in it can change any more (the
    request is final and no delivery is pending)."""

    request: RequestRow | None = None
    events: list[EventRow] = field(default_factory=list)
    deliveries: list[DeliveryRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    callbacks: list[CallbackRow] = field(default_factory=list)
    settled: bool = False

    def row_count(self) -> int:
        rows = len(self.events) + len(self.deliveries) + len(self.attempts) + len(self.callbacks)
        return (self.request is not None) + rows


def merge(older: Tree, newer: Tree) -> Tree:
    """``older`` (PostgreSQL's copy) updated with ``newer`` (what Redis still holds): rows by id,
    the newer winning; the request's record merged key by key."""
    merged = Tree(settled=newer.settled if newer.request or newer.events else older.settled)
    if older.request is not None and newer.request is not None:
        request = newer.request
        request.record = {**older.request.record, **newer.request.record}
        merged.request = request
    else:
        merged.request = newer.request or older.request
    events = {e.event_id: e for e in older.events} | {e.event_id: e for e in newer.events}
    merged.events = sorted(events.values(), key=lambda e: (e.created_at, e.event_id))
    deliveries = {d.delivery_id: d for d in older.deliveries} | {d.delivery_id: d for d in newer.deliveries}
    merged.deliveries = sorted(deliveries.values(), key=lambda d: (d.created_at, d.delivery_id))

    def attempt_key(a: AttemptRow) -> tuple[str, int, int, int]:
        return (a.delivery_id, a.cycle, a.attempt, a.at)

    attempts = {attempt_key(a): a for a in older.attempts} | {attempt_key(a): a for a in newer.attempts}
    merged.attempts = sorted(attempts.values(), key=lambda a: (a.at, a.delivery_id, a.cycle, a.attempt))
    # A callback's row never changes once written (PostgreSQL keeps the first): the older copy wins,
    # with the payload Redis may no longer have, unless it lacks the payload the newer one has.
    callbacks = {callback_key(c): c for c in newer.callbacks}
    for c in older.callbacks:
        if c.payload is not None or callback_key(c) not in callbacks:
            callbacks[callback_key(c)] = c
    merged.callbacks = sorted(callbacks.values(), key=callback_key_time)
    return merged


def callback_key(c: CallbackRow) -> tuple[str, int]:
    return (c.callback_id, c.received_at)


def callback_key_time(c: CallbackRow) -> tuple[int, str]:
    """The order both stores list a request's callbacks in."""
    return (c.received_at, c.callback_id)


class AttemptView(TypedDict):
    """An attempt as ``GET /v1/requests/{api_id}`` lists it."""

    delivery_id: str
    event_id: str
    target: str
    attempt: int
    cycle: int
    outcome: str
    status_code: int | None
    duration_ms: float | None
    error: str | None
    at: str


def attempt_view(a: AttemptRow, iso: Callable[[int], str]) -> AttemptView:
    return {
        "delivery_id": a.delivery_id,
        "event_id": a.event_id,
        "target": a.target,
        "attempt": a.attempt,
        "cycle": a.cycle,
        "outcome": a.outcome,
        "status_code": a.status_code,
        "duration_ms": a.duration_ms,
        "error": a.error,
        "at": iso(a.at),
    }


# Order of kinds that happen in the same millisecond (the submit is stored with its reply).
_RANK = {"submitted": 0, "upstream_reply": 1, "callback": 2, "event": 3, "attempt": 4, "job": 4}
CALLBACK_EVENTS = frozenset({"request.completed", "message.status", "call.status"})


def timeline(tree: Tree, iso: Callable[[int], str]) -> list[dict[str, Any]]:
    """Everything that happened to a request, in time order (``GET /v1/requests/{id}/timeline``)."""
    items: list[tuple[int, int, dict[str, Any]]] = []

    def add(at: int, kind: str, **fields: Any) -> None:
        items.append((at, _RANK[kind], {"at": iso(at), "kind": kind, **fields}))

    request = tree.request
    submitted = request.submitted_at if request else 0
    if request is not None:
        record = request.record
        add(
            submitted,
            "submitted",
            resource=request.resource,
            method=request.method,
            metadata=request.metadata,
        )
        unknown = record.get("upstream_error")
        add(
            submitted,
            "upstream_reply",
            outcome="unknown" if unknown else "accepted",
            **({"error": unknown} if unknown else {}),
        )
    if tree.callbacks:
        for c in tree.callbacks:
            add(c.received_at, "callback", **callback_view(c, iso))
        for event in tree.events:
            add(event.created_at, "event", event_id=event.event_id, type=event.type)
    else:  # copied before callbacks had rows of their own: what the request and its events tell
        _callbacks_from_events(tree, add)
    queue_deliveries = {d.delivery_id: d for d in tree.deliveries if d.target.get("type") == "queue"}
    for a in tree.attempts:
        fields = {k: v for k, v in attempt_view(a, iso).items() if k != "at"}
        queue = queue_deliveries.get(a.delivery_id)
        if queue is not None:
            add(a.at, "job", queue=queue.target.get("queue"), function=queue.target.get("function"), **fields)
        else:
            add(a.at, "attempt", **fields)
    items.sort(key=lambda item: (item[0], item[1]))
    return [entry for _, _, entry in items]


def _callbacks_from_events(tree: Tree, add: Callable[..., None]) -> None:
    request = tree.request
    submitted = request.submitted_at if request else 0
    if request is not None:
        record = request.record
        result = _json_object(record.get("result"))
        if result:
            at = int(result.get("at") or submitted)
            timed_out = int(record.get("timed_out_at") or 0)
            add(
                at,
                "callback",
                role="result",
                callback_id=result.get("cb"),
                signature_version=result.get("sv"),
                early=at < submitted,
                late=0 < timed_out < at,
            )
    for event in tree.events:
        if event.type in CALLBACK_EVENTS and event.type != "request.completed":
            data = event.body.get("data") or {}
            add(
                event.created_at,
                "callback",
                role="status",
                status=data.get("Status") or data.get("CallStatus") or data.get("Event"),
                sequence=data.get("Sequence"),
                early=event.created_at < submitted,
            )
        add(event.created_at, "event", event_id=event.event_id, type=event.type)


def callback_view(c: CallbackRow, iso: Callable[[int], str]) -> dict[str, Any]:
    """A callback as the timeline shows it."""
    payload = c.payload or {}
    view: dict[str, Any] = {
        "callback_id": c.callback_id,
        "role": "result" if c.kind == "result" else "status",
        "outcome": c.outcome,
        "signature_version": c.signature_version,
        "early": c.early,
        "duplicate": c.outcome == "duplicate",
        "late": c.outcome == "late",
        "handled_at": iso(c.handled_at),
    }
    if c.kind != "result":
        view["status"] = payload.get("Status") or payload.get("CallStatus") or payload.get("Event")
        view["sequence"] = payload.get("Sequence")
    return view


def _json_object(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw:
        try:
            value = json.loads(raw)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}
