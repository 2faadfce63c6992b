"""The event envelope that targets and subscribers receive (contract: Events)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds: ``2026-11-28T07:00:00.123Z``."""
    return f"{_iso_second(ms // 1000)}.{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=64)
def _iso_second(second: int) -> str:
    # Events come in bursts within the same few seconds: format each second once.
    return dt.datetime.fromtimestamp(second, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def event_id_for(cb_id: str) -> str:
    """Events born from a callback take their id from it, so reprocessing cannot duplicate them."""
    return f"evt_{cb_id}"


def timeout_event_id(api_id: str) -> str:
    """A request times out at most once, so its timeout event id derives from the api_id."""
    digest = hashlib.sha256(f"timeout|{api_id}".encode()).hexdigest()[:32]
    return f"evt_{digest}"


class EventJson(TypedDict):
    """An event as stored (``evt:{id}``), sent to webhooks and passed to queue targets' jobs: the
    JSON of ``Event.to_json``, keys in this order."""

    id: str
    type: str
    created_at: str
    api_id: str | None
    metadata: dict[str, Any]  # the request's metadata, as the user gave it (JSON)
    data: Any
    traceparent: NotRequired[str]


@dataclass(slots=True)  # not frozen: the consumer sets ``traceparent``, and one is built per event
class Event:
    """The envelope. ``to_json()`` is the object stored, sent to webhooks (compact JSON,
    ``gateway.store.delivery.encode_event``) and passed to queue targets' jobs; keys in this order,
    ``traceparent`` only when the event carries a trace context (GATEWAY_TRACE_PROPAGATION)."""

    id: str
    type: str
    created_at: str  # ISO 8601 UTC with milliseconds (``iso_ms``)
    api_id: str | None
    metadata: dict[str, Any]  # the request's metadata, as the user gave it
    data: Any  # the callback's parameters, or the event's own fields
    traceparent: str | None = None

    @classmethod
    def new(
        cls,
        event_id: str,
        event_type: str,
        created_ms: int,
        api_id: str | None,
        metadata: dict[str, Any],
        data: Any,
    ) -> Event:
        return cls(event_id, event_type, iso_ms(created_ms), api_id, metadata, data)

    @classmethod
    def from_json(cls, raw: EventJson) -> Event:
        traceparent = raw.get("traceparent")
        return cls(
            str(raw["id"]),
            str(raw["type"]),
            str(raw["created_at"]),
            raw.get("api_id"),
            raw.get("metadata") or {},
            raw.get("data"),
            None if traceparent is None else str(traceparent),
        )

    def to_json(self) -> EventJson:
        out: EventJson = {
            "id": self.id,
            "type": self.type,
            "created_at": self.created_at,
            "api_id": self.api_id,
            "metadata": self.metadata,
            "data": self.data,
        }
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
        return out
