"""A delivery's record and its attempt log, as the store keeps them and the APIs show them
(Redis' ``dlv:{id}`` hash and ``dlvlog:{id}`` list; PostgreSQL's ``deliveries`` and ``attempts``)."""

from __future__ import annotations

from typing import TypedDict


class DeliveryRecord(TypedDict, total=False):
    """A delivery's record (``dlv:{id}``, a hash: every value a string, as Redis keeps it)."""

    id: str
    event_id: str
    event_type: str
    target: str  # the target's JSON (``Target.to_json``)
    sub: str  # its subscription's id, "" for a request's own target
    status: str  # pending | succeeded | failed (``DeliveryStatus``)
    cycle: str  # 0, then +1 for each manual retry or replay
    attempts: str  # attempts made in this cycle
    deferrals: str  # attempts put off without being counted (admission refused)
    created_at: str  # epoch ms
    updated_at: str
    last_attempt_at: str
    last_code: str  # the last answer's HTTP status, "" without one
    last_error: str
    next_attempt_at: str  # epoch ms, "" when nothing is scheduled
    api_id: str  # the request's, when it has one (the archive finds the request by it)


class AttemptLog(TypedDict):
    """One attempt in a delivery's log (``dlvlog:{id}``, JSON): what the deliveries API shows."""

    attempt: int
    cycle: int
    at: str  # ISO 8601 UTC with milliseconds
    outcome: str  # workers.retry.Outcome's value
    status_code: int | None
    duration_ms: float
    error: str
    response: str  # the answer's body, up to GATEWAY_MAX_RESPONSE_BYTES
