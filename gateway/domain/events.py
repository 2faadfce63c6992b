"""The event envelope that targets and subscribers receive (contract: Events)."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from typing import Any


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


def envelope(
    event_id: str,
    event_type: str,
    created_ms: int,
    api_id: str | None,
    metadata: dict[str, Any],
    data: Any,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "created_at": iso_ms(created_ms),
        "api_id": api_id,
        "metadata": metadata,
        "data": data,
    }
