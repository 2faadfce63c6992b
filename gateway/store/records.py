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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from gateway.domain.outcomes import CorrelationOutcome
from gateway.domain.targets import Target
from gateway.store.keys import HOUR_MS, ref_bucket

__all__ = [
    "DEFAULTS",
    "FIELDS",
    "HOUR_MS",
    "STATUSES",
    "Correlation",
    "NewRequest",
    "RequestRecord",
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
    "archived": "h",  # "1": in PostgreSQL, and Redis let go of its result and events (store/archive.py)
    "erased_at": "z",  # ms: its payloads were erased (DELETE /v1/requests/{api_id})
}
DEFAULTS = {"status": "pending", "method": "POST", "metadata": "{}", "targets": "[]"}


def now_ms() -> int:
    return int(time.time() * 1000)


def pack_targets(targets: Sequence[Mapping[str, str]]) -> str:
    """Targets as stored (their JSON, ``Target.to_json``): a POST webhook (the usual target) is
    just its URL."""
    packed: list[str | Mapping[str, str]] = []
    for target in targets:
        plain = target.get("type") == "webhook" and isinstance(target.get("url"), str)
        if plain and set(target) <= {"type", "url", "method"} and target.get("method", "POST") == "POST":
            packed.append(target["url"])
        else:
            packed.append(target)
    return json.dumps(packed, separators=(",", ":"))


def unpack_targets(raw: str) -> list[dict[str, str]]:
    return [
        {"type": "webhook", "url": t, "method": "POST"} if isinstance(t, str) else t for t in json.loads(raw)
    ]


class RequestRecord(TypedDict, total=False):
    """A request as the store hands it out (``decode_record``): ``FIELDS`` under their logical
    names, every value a string as Redis keeps it; status, method, metadata and targets always
    there (their defaults filled in)."""

    api_id: str
    status: str  # STATUSES
    method: str
    resource: str
    metadata: str  # JSON
    targets: str  # JSON: a list of ``Target.to_json`` objects
    submitted_at: str  # epoch ms
    traceparent: str
    result: str  # the completing inbox entry (JSON, ``InboxEntry``)
    result_cb: str
    completed_at: str  # epoch ms
    timed_out_at: str  # epoch ms
    upstream_error: str
    archived: str
    erased_at: str  # epoch ms


def decode_record(api_id: str, raw: dict[str, str]) -> RequestRecord:
    """A stored record under the logical field names, defaults filled in (empty if none)."""
    if not raw:
        return {}
    record = {name: raw[short] for name, short in FIELDS.items() if short in raw}
    for name, default in DEFAULTS.items():
        record.setdefault(name, default)
    record["targets"] = json.dumps(unpack_targets(record["targets"]), separators=(",", ":"))
    record["api_id"] = api_id
    return cast(RequestRecord, record)  # FIELDS names exactly RequestRecord's keys


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def packed_id(api_id: str) -> str | bytes:
    """An api_id as the due queues and ref buckets keep it: Plivo's are UUIDs, 17 bytes instead of
    36 (lua/lib/unpack_id.lua reverses it). Anything else is kept as it is: api_ids are opaque."""
    if _CANONICAL_UUID.fullmatch(api_id):
        return b"\0" + uuid.UUID(api_id).bytes
    return api_id


@dataclass(frozen=True, slots=True)
class Correlation:
    """What ``correlate`` found: the outcome and, when it matched, the request's fields the
    event needs."""

    outcome: CorrelationOutcome
    api_id: str
    previous_status: str
    metadata: dict[str, Any]  # the request's metadata (JSON, as the user gave it)
    targets: list[Target]
    resource: str


@dataclass(frozen=True, slots=True)
class NewRequest:
    api_id: str
    method: str
    resource: str
    params: dict[str, Any]  # what is sent upstream (JSON)
    metadata: dict[str, Any]  # the user's (JSON)
    targets: Sequence[Mapping[str, str]]  # their JSON (``Target.to_json``, the API's target models)
    timeout_s: int
    ref: str
    traceparent: str = ""  # W3C trace context of the submit (gateway.infra.tracing), "" when off
    status: str = "pending"  # or "unknown" (then api_id is the ref)
    upstream_error: str = ""
