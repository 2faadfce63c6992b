"""arq's job format, as the delivery scripts write jobs (lua/lib/schedule.lua): the payload arq's
``serialize_job`` makes, under arq's own key prefixes (``gateway.store.keys``)."""

from __future__ import annotations

from arq.jobs import serialize_job

from gateway.store.keys import ARQ_JOB_TTL_MS
from gateway.store.records import now_ms

__all__ = ["ARQ_JOB_TTL_MS", "DELIVER_JOB", "OPERATOR_EVENT_JOB", "deliver_payload"]

DELIVER_JOB = "cg_deliver"
OPERATOR_EVENT_JOB = "cg_operator_event"


def deliver_payload(dlv_id: str, cycle: int, attempt: int) -> bytes:
    """The arq job (in arq's own format) that makes attempt ``attempt`` of cycle ``cycle``."""
    return serialize_job(DELIVER_JOB, (dlv_id, cycle, attempt), {}, None, now_ms())
