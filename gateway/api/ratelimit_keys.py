"""Per-caller rate limits on the gateway's own API, shared by every process through Redis.

Only the authenticated API (bearer keys on ``/v1/``, proxy tokens on ``/v1/Account/``) is counted:
the limit runs inside the authentication dependencies, which the receiver (``/callbacks/plivo``)
never uses. Plivo's callbacks therefore never see a 429 from us, whatever a client does with its
key: Plivo retries a failed callback only a few times (docs/plivo.md §4), so a limit there
could lose a result for good. The receiver is protected by its signature check and body limit.
"""

from __future__ import annotations

import hashlib
import math

from fastapi import Request

from gateway.api.state import GatewayState
from gateway.domain.errors import RateLimited
from gateway.store import FrontDoorStore


def frontdoor(request: Request, state: GatewayState) -> FrontDoorStore:
    """The process's FrontDoorStore, made on first use (it shares the lifespan's Redis pool)."""
    found: FrontDoorStore | None = getattr(request.app.state, "frontdoor", None)
    if found is None or found.redis is not state.redis:
        found = FrontDoorStore(state.redis, state.settings.GATEWAY_KEY_PREFIX)
        request.app.state.frontdoor = found
    return found


def caller_id(secret: str) -> str:
    """A stable, non-reversible name for a key in Redis (the key itself is never stored)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:24]


async def enforce(request: Request, state: GatewayState, caller_secret: str) -> None:
    """Count one request for this caller; 429 with Retry-After once its window is used up."""
    settings = state.settings
    limit = settings.GATEWAY_API_RATE_LIMIT
    if limit <= 0:
        return
    window = settings.GATEWAY_API_RATE_WINDOW
    wait_ms = await frontdoor(request, state).api_rate(caller_id(caller_secret), limit, int(window * 1000))
    if wait_ms > 0:
        raise RateLimited(
            f"rate limit of {limit} requests per {window:g} s reached for this API key, retry later",
            retry_after=math.ceil(wait_ms / 1000),
        )
