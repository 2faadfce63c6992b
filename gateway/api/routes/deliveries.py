"""Delivery logs, dead letters, manual retry and event replay."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypedDict

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from gateway.api.checks import disabled_subscription, enable_first, time_ms
from gateway.api.deps import ApiKey, State
from gateway.api.pagination import page
from gateway.api.state import GatewayState
from gateway.domain.errors import BadRequest, NotFound, new_api_id
from gateway.domain.events import iso_ms
from gateway.domain.history import DeliveryRow
from gateway.services.history_reads import changed, cold_store, merge_page
from gateway.store.delivery import AttemptLog, DeliveryQuery, DeliveryRecord

Found = tuple[DeliveryRecord, list[AttemptLog]]

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])
events_router = APIRouter(prefix="/v1/events", tags=["events"])

DeliveryStatus = Literal["pending", "succeeded", "failed"]


def _iso(ms: str | None) -> str | None:
    return iso_ms(int(ms)) if ms else None


def _code(value: str | None) -> int | None:
    return int(value) if value else None


class DeliveryView(TypedDict):
    """A delivery as the deliveries API shows it."""

    id: str | None
    event_id: str | None
    event_type: str | None
    subscription_id: str | None
    target: dict[str, str]  # its JSON (``Target.to_json``), without the subscription's id
    status: str
    attempt_count: int
    replays: int
    last_status_code: int | None
    last_error: str | None
    created_at: str | None
    updated_at: str | None
    next_attempt_at: str | None
    attempts: list[AttemptLog]


def delivery_view(record: DeliveryRecord, log: list[AttemptLog]) -> DeliveryView:
    target: dict[str, str] = json.loads(record.get("target") or "{}")
    target.pop("subscription", None)
    status = record.get("status", "pending")
    return {
        "id": record.get("id"),
        "event_id": record.get("event_id"),
        "event_type": record.get("event_type") or None,
        "subscription_id": record.get("sub") or None,
        "target": target,
        "status": status,
        "attempt_count": len(log),
        "replays": int(record.get("cycle") or 0),
        "last_status_code": _code(record.get("last_code")),
        "last_error": record.get("last_error") or None,
        "created_at": _iso(record.get("created_at")),
        "updated_at": _iso(record.get("updated_at")),
        "next_attempt_at": _iso(record.get("next_attempt_at")) if status == "pending" else None,
        "attempts": log,
    }


@router.get("")
async def list_deliveries(
    state: State,
    _: ApiKey,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    subscription_id: Annotated[str | None, Query(max_length=64)] = None,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
    created_at__gte: Annotated[str | None, Query()] = None,
    created_at__lte: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=20)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Deliveries with every attempt, newest first; filter by status, subscription, type, time."""
    query = DeliveryQuery(
        status=status or "",
        subscription=subscription_id or "",
        event_type=event_type or "",
        since_ms=time_ms("created_at__gte", created_at__gte),
        until_ms=time_ms("created_at__lte", created_at__lte),
        offset=offset,
        limit=limit,
    )
    trees = await changed(state.archive)
    history = cold_store(state.history)
    in_redis = [d for c in trees for d in c.tree.deliveries]  # changed since copied: Redis is current
    matching = [d.delivery_id for d in in_redis if _matches(d, query)]
    hot = [
        (int(r.get("created_at") or 0), r["id"], (r, log))
        for r, log in await state.deliveries.get_deliveries(matching)
    ]
    total, estimated, cold = await history.list_deliveries(
        status=query.status,
        subscription=query.subscription,
        event_type=query.event_type,
        since_ms=query.since_ms,
        until_ms=query.until_ms,
        exclude=[d.delivery_id for d in in_redis],
        skip=0,
        n=offset + limit,
    )
    listing = merge_page(hot, total, cold, estimated, offset, limit)
    filters = {
        "status": status or "",
        "subscription_id": subscription_id or "",
        "event_type": event_type or "",
        "created_at__gte": created_at__gte or "",
        "created_at__lte": created_at__lte or "",
    }
    meta = page("/v1/deliveries", limit, offset, listing.total, filters, estimated=listing.estimated)
    objects = [delivery_view(r, log) for r, log in listing.items]
    return {"api_id": new_api_id(), "message": "deliveries listed", **meta, "objects": objects}


def _matches(d: DeliveryRow, q: DeliveryQuery) -> bool:
    return (
        (not q.status or d.status == q.status)
        and (not q.subscription or d.subscription_id == q.subscription)
        and (not q.event_type or d.event_type == q.event_type)
        and (q.since_ms is None or d.created_at >= q.since_ms)
        and (q.until_ms is None or d.created_at <= q.until_ms)
    )


async def _find(state: GatewayState, delivery_id: str) -> Found | None:
    """A delivery and its log: from Redis while it is there, else from PostgreSQL."""
    found = await state.deliveries.get_deliveries([delivery_id])
    if found:
        return found[0]
    return await cold_store(state.history).get_delivery(delivery_id)


async def _back_in_redis(state: GatewayState, delivery_id: str) -> Found | None:
    """A delivery Redis has let go, put back from PostgreSQL (record, log, event) to be re-armed."""
    found = await state.deliveries.get_deliveries([delivery_id])
    if found:
        return found[0]
    history = cold_store(state.history)
    cold = await history.get_delivery(delivery_id)
    if cold is None:
        return None
    record, log = cold
    event = await history.get_event(record["event_id"])
    if event is None:
        return None
    await state.archive.rehydrate(record, log, event, state.settings.GATEWAY_RETENTION)
    return cold


@router.get("/{delivery_id}")
async def get_delivery(delivery_id: str, state: State, _: ApiKey) -> dict[str, Any]:
    """One delivery and its attempts (from PostgreSQL once Redis has let it go)."""
    found = await _find(state, delivery_id)
    if found is None:
        raise NotFound(f"no delivery with id {delivery_id}")
    record, log = found
    return {"api_id": new_api_id(), "message": "delivery found", "delivery": delivery_view(record, log)}


@router.post("/{delivery_id}/retry", status_code=202)
async def retry_delivery(delivery_id: str, state: State, _: ApiKey) -> JSONResponse:
    """Attempt a failed (or succeeded) delivery again, with a fresh retry schedule. A succeeded
    one is sent again (receivers dedupe by ``webhook-id``, the same event id); one whose
    subscription is disabled is refused (400): enable the subscription first. One that Redis has
    let go is put back from PostgreSQL first: the same delivery, the same ``webhook-id``."""
    found = await _back_in_redis(state, delivery_id)
    if found is None:
        raise NotFound(f"no delivery with id {delivery_id}")
    record = found[0]
    disabled = await disabled_subscription(state, record)
    if disabled:
        raise enable_first(disabled)
    cycle = await state.deliveries.rearm(delivery_id)
    if cycle == -2:
        raise NotFound(f"no delivery with id {delivery_id}")
    if cycle == -1:
        raise BadRequest("delivery is pending: its next attempt is already scheduled")
    if cycle == -4:
        raise NotFound(f"the event of delivery {delivery_id} has expired (GATEWAY_RETENTION)")
    again = " (it had succeeded: it is sent again)" if record.get("status") == "succeeded" else ""
    body = {
        "api_id": new_api_id(),
        "message": "delivery retry queued" + again,
        "delivery_id": delivery_id,
        "status": "pending",
    }
    return JSONResponse(body, status_code=202)


@events_router.post("/{event_id}/replay", status_code=202)
async def replay_event(event_id: str, state: State, _: ApiKey) -> JSONResponse:
    """Deliver an event to all of its targets again (queue targets too: a new job). Deliveries
    still pending, and those of disabled subscriptions, are left out and listed in ``skipped``.
    An event Redis has let go is put back from PostgreSQL first (the same ``webhook-id``)."""
    delivery_ids = await state.deliveries.event_deliveries(event_id)
    if await state.deliveries.get_event(event_id) is None:  # Redis let it go: put it back
        history = cold_store(state.history)
        if await history.get_event(event_id) is None:
            raise NotFound(f"no event with id {event_id}")
        delivery_ids = sorted({r["id"] for r in await history.event_deliveries(event_id)})
        for dlv_id in delivery_ids:
            await _back_in_redis(state, dlv_id)
    queued: list[str] = []
    skipped: list[dict[str, str]] = []
    for record, _log in await state.deliveries.get_deliveries(delivery_ids):
        dlv_id = record["id"]
        disabled = await disabled_subscription(state, record)
        if disabled:
            skipped.append({"delivery_id": dlv_id, "reason": enable_first(disabled).message})
        elif await state.deliveries.rearm(dlv_id) >= 0:
            queued.append(dlv_id)
        else:
            skipped.append({"delivery_id": dlv_id, "reason": "pending: its next attempt is scheduled"})
    body = {
        "api_id": new_api_id(),
        "message": "event replay queued",
        "event_id": event_id,
        "deliveries": queued,
        "skipped": skipped,
    }
    return JSONResponse(body, status_code=202)
