"""Dependencies shared by the routes."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from gateway.errors import Unauthorized
from gateway.state import GatewayState


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gw
    return state


State = Annotated[GatewayState, Depends(get_state)]


def require_api_key(request: Request, state: State) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer API key (Authorization: Bearer <key>)")
    found = False
    for key in state.settings.api_keys:
        found |= hmac.compare_digest(key.encode(), token.strip().encode())
    if not found:
        raise Unauthorized("unknown API key")
    return token


ApiKey = Annotated[str, Depends(require_api_key)]
