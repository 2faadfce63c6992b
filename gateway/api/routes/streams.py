"""Server-Sent Events: every event of one request, as it happens."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from gateway.api.deps import ApiKey, State
from gateway.api.state import GatewayState
from gateway.domain.errors import NotFound
from gateway.domain.events import EventJson

router = APIRouter(prefix="/v1/requests", tags=["requests"])

HEARTBEAT_S = 15.0


def _frame(event: EventJson) -> bytes:
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


async def _stream(
    state: GatewayState, request: Request, api_id: str, last_id: str | None, seconds: float
) -> AsyncIterator[bytes]:
    wake = state.notifier.register(api_id)
    try:
        sent: set[str] = set()
        skipping = last_id is not None
        deadline = time.monotonic() + seconds
        next_beat = time.monotonic() + HEARTBEAT_S
        yield b"retry: 2000\n\n"
        while time.monotonic() < deadline and not await request.is_disconnected():
            found = await state.store.get_request(api_id)
            for event in found[1] if found else []:
                if skipping:  # resume after Last-Event-ID
                    skipping = event["id"] != last_id
                    continue
                if event["id"] not in sent:
                    sent.add(event["id"])
                    yield _frame(event)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + HEARTBEAT_S
                yield b": keep-alive\n\n"
            await state.notifier.wait(wake, min(deadline - time.monotonic(), HEARTBEAT_S))
    finally:
        state.notifier.unregister(api_id, wake)


@router.get(
    "/{api_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
async def events(
    api_id: str,
    request: Request,
    state: State,
    _: ApiKey,
    last_event_id: Annotated[str | None, Header()] = None,
    duration: Annotated[float, Query(gt=0, le=3600)] = 300,
) -> StreamingResponse:
    """A Server-Sent Events stream of the request's events (resumable with Last-Event-ID)."""
    if await state.store.get_request(api_id) is None:
        raise NotFound(f"no request with api_id {api_id}")
    return StreamingResponse(
        _stream(state, request, api_id, last_event_id, duration),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
