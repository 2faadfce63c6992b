"""The drop-in proxy: Plivo's own API on the gateway, for clients that only change a base URL.

``/v1/Account/{auth_id}/{resource}`` takes what Plivo takes (Basic auth, JSON on POST, a query
string on GET/DELETE) and forwards it once to Plivo with the gateway's credentials; Plivo's answer
comes back unchanged (status, body, ``api_id``), errors included, so SDKs raise what they would
raise. A request with ``callback_url`` is asynchronous: the gateway puts its receiver in its place
and keeps the client's URL as the request's ``plivo_relay`` target, which gets the callback as
Plivo would have sent it, re-signed (V3) with the client's own token (``gateway.services.proxy_tokens``).
Subscriptions get the same event as for any other request. A token reaches only its
``resources`` (``gateway.services.proxy_tokens``); anything else is 403 before anything goes upstream.

Not retried here, unlike ``/v1/requests``: a client of Plivo's API already owns its retry policy,
and answering with Plivo's own status is what the drop-in promises. The shared upstream rate
limiter still applies, so proxy and gateway traffic together stay under the account's limit.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request

from gateway.api import ratelimit_keys
from gateway.api.body import read_json
from gateway.api.state import GatewayState
from gateway.domain.callbacks import REF_PARAM
from gateway.domain.errors import BadGateway, BadRequest, Forbidden, NotFound, Unauthorized
from gateway.domain.targets import RelayTarget, Target, targets_from_json
from gateway.infra import logs
from gateway.services.proxy_tokens import DEFAULT_RESOURCES, reaches, token_hash, token_id_of
from gateway.services.ratelimit import SharedRateLimiter
from gateway.services.webhook_policy import refusal
from gateway.store import NewRequest

_RESOURCE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-.]+)*/?$")
Params = dict[str, Any]
log = logs.get("gateway.api.proxy")


def _unauthorized(message: str = "authentication failed") -> Unauthorized:
    error = Unauthorized(message)
    error.headers["WWW-Authenticate"] = 'Basic realm="plivo"'
    return error


def _basic(request: Request) -> tuple[str, str]:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise _unauthorized("missing Basic credentials (AUTH ID and token)")
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _unauthorized() from exc
    if not sep:
        raise _unauthorized()
    return user, password


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called the proxy: the token id ("" for the account's real token), the resource
    prefixes it may reach (None: all, for the real token) and what that token's async requests
    carry besides the relay (extra targets, metadata)."""

    token_id: str
    targets: list[Target] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    resources: tuple[str, ...] | None = None


async def authenticate(request: Request, state: GatewayState, auth_id: str) -> Caller:
    """The caller, or 401; then counted against that caller's API rate limit."""
    settings = state.settings
    user, password = _basic(request)
    if not (settings.PLIVO_AUTH_ID and user == auth_id and hmac.compare_digest(user, settings.PLIVO_AUTH_ID)):
        raise _unauthorized()
    real = settings.PLIVO_AUTH_TOKEN.get_secret_value()
    if settings.GATEWAY_PROXY_PASSTHROUGH and real and hmac.compare_digest(password.encode(), real.encode()):
        await ratelimit_keys.enforce(request, state, "plivo:" + user)
        return Caller("")
    token_id = token_id_of(password)
    record = await ratelimit_keys.frontdoor(request, state).get_token(token_id) if token_id else {}
    if not token_id or not record or not hmac.compare_digest(record["hash"], token_hash(password)):
        raise _unauthorized()
    await ratelimit_keys.enforce(request, state, "ptok:" + token_id)
    targets = targets_from_json(json.loads(record.get("targets") or "[]"))
    # A token issued before tokens had resources gets the default scope.
    stored = record.get("resources")
    resources = tuple(json.loads(stored)) if stored else DEFAULT_RESOURCES
    return Caller(token_id, targets, json.loads(record.get("metadata") or "{}"), resources)


def authorize(caller: Caller, resource: str) -> None:
    """403, in Plivo's error shape, when a token's resources do not reach ``resource``."""
    if caller.resources is None or reaches(caller.resources, resource):
        return
    log.warning("proxy_forbidden", token_id=caller.token_id, resource=resource[:200])
    what = repr(resource) if resource else "the account itself"
    raise Forbidden(f"this proxy token may not access {what}; it reaches {', '.join(caller.resources)}")


def check_resource(resource: str) -> str:
    if not _RESOURCE.fullmatch(resource) or ".." in resource:
        raise NotFound(f"no such resource: {resource}")
    return resource


async def read_params(request: Request, state: GatewayState) -> Params | list[tuple[str, str]]:
    """A POST's JSON object, or the query of a GET/DELETE as pairs (repeated keys kept)."""
    if request.method != "POST":
        return request.query_params.multi_items()
    return await read_json(request, state.settings, optional=True)


async def forward(
    state: GatewayState, method: str, resource: str, params: Params | list[tuple[str, str]]
) -> httpx.Response:
    """Send once to Plivo with the account's credentials, under the shared upstream limiter."""
    s = state.settings
    limiter = SharedRateLimiter(
        state.store, "upstream", limit=s.UPSTREAM_RATE_LIMIT, window=s.UPSTREAM_RATE_WINDOW,
        max_wait=s.UPSTREAM_RATE_MAX_WAIT,
    )  # fmt: skip
    await limiter()
    url = f"{s.PLIVO_API_URL}/v1/Account/{s.PLIVO_AUTH_ID}/{resource}"
    auth = httpx.BasicAuth(s.PLIVO_AUTH_ID, s.PLIVO_AUTH_TOKEN.get_secret_value())
    try:
        if method == "POST":
            return await state.http.post(url, json=params, auth=auth)
        pairs = params.items() if isinstance(params, dict) else params
        query: list[tuple[str, str | int | float | bool | None]] = [(k, str(v)) for k, v in pairs]
        return await state.http.request(method, url, params=query, auth=auth)
    except httpx.TransportError as exc:
        raise BadGateway(f"upstream unreachable: {type(exc).__name__}") from exc


async def relay_target(state: GatewayState, params: Params, token_id: str) -> RelayTarget:
    """The client's callback_url/callback_method as the request's relay target (400 if unusable)."""
    url = str(params.get("callback_url") or "")
    method = str(params.get("callback_method") or "POST").upper()
    if not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise BadRequest("callback_url: must be an absolute http(s) URL")
    if method not in ("GET", "POST"):
        raise BadRequest("callback_method: must be GET or POST")
    why = await refusal(state.settings, url)
    if why:
        raise BadRequest(f"callback_url: {why}")
    return RelayTarget(url, method, token_id)


async def forward_async(
    state: GatewayState, method: str, resource: str, params: Params, caller: Caller
) -> httpx.Response:
    """Forward with the gateway's receiver as callback_url; remember the client's as a target
    (next to the token's own targets)."""
    target = await relay_target(state, params, caller.token_id)
    ref = secrets.token_urlsafe(12)
    upstream = {**params, "callback_url": f"{state.settings.callback_url}?{REF_PARAM}={ref}"}
    upstream["callback_method"] = "POST"
    reply = await forward(state, method, resource, upstream)
    api_id = _api_id(reply)
    if reply.is_success and api_id:
        request = NewRequest(
            api_id=api_id,
            method=method,
            resource=resource,
            params=params,
            metadata=caller.metadata,
            targets=[t.to_json() for t in (target, *caller.targets)],
            timeout_s=state.settings.GATEWAY_DEFAULT_TIMEOUT,
            ref=ref,
        )
        await state.store.save_request(request)
    return reply


def _api_id(reply: httpx.Response) -> str | None:
    try:
        body = reply.json()
    except ValueError:
        return None
    api_id = body.get("api_id") if isinstance(body, dict) else None
    return api_id if isinstance(api_id, str) and api_id else None
