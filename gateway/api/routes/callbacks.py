"""Callbacks that matched no request: kept and inspectable, never dropped."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gateway.api.deps import ApiKey, State
from gateway.api.pagination import page
from gateway.domain.errors import new_api_id
from gateway.services.history_reads import changed, cold_store, merge_page

UNMATCHED = "callback.unmatched"

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])


@router.get("/unmatched")
async def unmatched(
    state: State,
    _: ApiKey,
    limit: Annotated[int, Query(ge=1, le=20)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Callbacks that matched nothing within the grace period, as their callback.unmatched events
    (Redis and PostgreSQL: ``gateway.services.history_reads``)."""
    trees = await changed(state.archive)
    history = cold_store(state.history)
    events = [e for c in trees for e in c.tree.events]
    hot = [(e.created_at, e.event_id, e.body) for e in events if e.type == UNMATCHED]
    total, estimated, cold = await history.list_events(
        UNMATCHED, [e.event_id for e in events], 0, offset + limit
    )
    listing = merge_page(hot, total, cold, estimated, offset, limit)
    return {
        "api_id": new_api_id(),
        "message": "unmatched callbacks listed",
        **page("/v1/callbacks/unmatched", limit, offset, listing.total, {}, estimated=listing.estimated),
        "objects": listing.items,
    }
