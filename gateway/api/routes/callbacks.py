"""Callbacks that matched no request: kept and inspectable, never dropped."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from gateway.api.deps import ApiKey, State
from gateway.api.pagination import page
from gateway.domain.errors import new_api_id

router = APIRouter(prefix="/v1/callbacks", tags=["callbacks"])


@router.get("/unmatched")
async def unmatched(
    state: State,
    _: ApiKey,
    limit: Annotated[int, Query(ge=1, le=20)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Callbacks that matched nothing within the grace period, as their callback.unmatched events."""
    total, events = await state.store.list_unmatched(limit, offset)
    return {
        "api_id": new_api_id(),
        "message": "unmatched callbacks listed",
        **page("/v1/callbacks/unmatched", limit, offset, total, {}),
        "objects": events,
    }
