"""How a request is stored: the ``req:{api_id}`` hash's fields, its packed targets, and the values
the store hands out (``NewRequest`` in, ``Correlation`` and decoded records out).

The record has one-letter fields (``FIELDS``): a pending request is mostly its metadata and
targets, and long field names would be a fifth of it. Fields that hold their default are not
written: no ``s`` is pending, no ``m`` is POST. Due queues and ref buckets keep a UUID api_id as 17
bytes (``packed_id``). Why and what it saves: gateway.store and docs/performance.md.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.store.keys import HOUR_MS, ref_bucket

__all__ = [
    "DEFAULTS",
    "FIELDS",
    "HOUR_MS",
    "STATUSES",
    "Correlation",
    "NewRequest",
    "decode_record",
    "now_ms",
    "pack_targets",
    "packed_id",
    "ref_bucket",
    "unpack_targets",
]

# ``unknown``: sent upstream, no usable answer (gateway.services.upstream.OutcomeUnknown); kept under its ref,
# it completes if its callback comes and times out like a pending request if none does.
STATUSES = ("pending", "completed", "timed_out", "unknown")

# Logical field name (what callers of the store see) -> field inside ``req:{api_id}``.
FIELDS = {
    "status": "s",  # absent while pending
    "method": "m",  # absent when POST
    "resource": "r",
    "metadata": "d",  # JSON, absent when {}
    "targets": "t",  # compact JSON (pack_targets), absent when []
    "submitted_at": "a",  # ms
    "traceparent": "p",  # absent when tracing is off
    "result": "x",  # the inbox entry that completed the request
    "result_cb": "b",  # its callback id
    "completed_at": "c",  # ms
    "timed_out_at": "o",  # ms
    "upstream_error": "e",  # why the outcome is unknown (status unknown only)
}
DEFAULTS = {"status": "pending", "method": "POST", "metadata": "{}", "targets": "[]"}


def now_ms() -> int:
    return int(time.time() * 1000)


def pack_targets(targets: list[dict[str, Any]]) -> str:
    """Targets as stored: a POST webhook (the usual target) is just its URL."""
    packed: list[Any] = []
    for target in targets:
        plain = target.get("type") == "webhook" and isinstance(target.get("url"), str)
        if plain and set(target) <= {"type", "url", "method"} and target.get("method", "POST") == "POST":
            packed.append(target["url"])
        else:
            packed.append(target)
    return json.dumps(packed, separators=(",", ":"))


def unpack_targets(raw: str) -> list[dict[str, Any]]:
    return [
        {"type": "webhook", "url": t, "method": "POST"} if isinstance(t, str) else t for t in json.loads(raw)
    ]


def decode_record(api_id: str, raw: dict[str, str]) -> dict[str, str]:
    """A stored record under the logical field names, defaults filled in (empty if none)."""
    if not raw:
        return {}
    record = {name: raw[short] for name, short in FIELDS.items() if short in raw}
    for name, default in DEFAULTS.items():
        record.setdefault(name, default)
    record["targets"] = json.dumps(unpack_targets(record["targets"]), separators=(",", ":"))
    record["api_id"] = api_id
    return record


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def packed_id(api_id: str) -> str | bytes:
    """An api_id as the due queues and ref buckets keep it: Plivo's are UUIDs, 17 bytes instead of
    36 (lua/lib/unpack_id.lua reverses it). Anything else is kept as it is: api_ids are opaque."""
    if _CANONICAL_UUID.fullmatch(api_id):
        return b"\0" + uuid.UUID(api_id).bytes
    return api_id


@dataclass(frozen=True, slots=True)
class Correlation:
    outcome: str  # parked | matched | replay | extra | late | stale
    api_id: str
    previous_status: str
    metadata: dict[str, Any]
    targets: list[dict[str, Any]]
    resource: str


@dataclass(frozen=True, slots=True)
class NewRequest:
    api_id: str
    method: str
    resource: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    targets: list[dict[str, Any]]
    timeout_s: int
    ref: str
    traceparent: str = ""  # W3C trace context of the submit (gateway.infra.tracing), "" when off
    status: str = "pending"  # or "unknown" (then api_id is the ref)
    upstream_error: str = ""
