"""Dependencies shared by the routes.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool, which
cost the receiver a third of its throughput (docs/performance.md).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.api import ratelimit_keys
from gateway.api.state import GatewayState
from gateway.domain.errors import BadRequest, Unauthorized


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


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` declares (its dependencies' included), kept on the route."""
    names: frozenset[str] | None = getattr(route, "_cg_query_names", None)
    if names is None:
        names = frozenset(_walk(route.dependant))
        route._cg_query_names = names  # type: ignore[attr-defined]
    return names


def _walk(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _walk(sub)
    return names


async def known_query_only(request: Request) -> None:
    """400 naming a query parameter the route does not take: silently ignoring it would answer
    an unfiltered list to a misspelt filter (``?subscription=`` for ``?subscription_id=``)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    accepted = _query_names(route)
    for name in request.query_params:
        if name not in accepted:
            hint = f"; this endpoint takes {', '.join(sorted(accepted))}" if accepted else ""
            raise BadRequest(f"unknown query parameter {name!r}{hint}")
