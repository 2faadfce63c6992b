"""Dependencies shared by the routes.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, which
cost the receiver a third of its throughput (docs/performance.md).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from gateway.api import ratelimit_keys
from gateway.errors import Unauthorized
from gateway.state import GatewayState


async def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gw
    return state


State = Annotated[GatewayState, Depends(get_state)]


async def require_api_key(request: Request, state: State) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer API key (Authorization: Bearer <key>)")
    found = False
    for key in state.settings.api_keys:
        found |= hmac.compare_digest(key.encode(), token.strip().encode())
    if not found:
        raise Unauthorized("unknown API key")
    await ratelimit_keys.enforce(request, state, "key:" + token.strip())
    return token


ApiKey = Annotated[str, Depends(require_api_key)]
