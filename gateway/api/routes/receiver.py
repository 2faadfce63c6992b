"""The callback receiver: verify, store durably, answer. Nothing else on the request path.

Correlation and fan-out happen in the worker; this route costs one Redis round trip (the
``ingest`` script: dedup + XADD). It answers 200 only after that script returned, and 503 when
Redis is unreachable so that Plivo retries later.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from redis.exceptions import RedisError

from gateway import logs
from gateway.api.body import media_type, read_limited
from gateway.api.deps import State
from gateway.callbacks import callback_id, parse_form, parse_json
from gateway.errors import Forbidden, Unavailable, UnsupportedMediaType
from gateway.settings import Settings
from gateway.signing import verify_v2, verify_v3

router = APIRouter(tags=["receiver"])
log = logs.get("gateway.receiver")

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def _tokens(settings: Settings) -> tuple[list[str], list[str]]:
    own = settings.PLIVO_AUTH_TOKEN.get_secret_value()
    main = settings.PLIVO_MAIN_AUTH_TOKEN.get_secret_value() or own
    return [own], [main]


def signature_ok(settings: Settings, request: Request, url: str, params: dict[str, Any] | None) -> bool:
    """True if any Plivo signature header on the request is valid for ``url`` and ``params``.

    ``url`` is rebuilt from GATEWAY_PUBLIC_URL, never from the Host header: behind a proxy the
    URL Plivo signed is the public one. ``-Ma-`` headers are signed with the main account's token."""
    own, main = _tokens(settings)
    h = request.headers
    v3_nonce = h.get("x-plivo-signature-v3-nonce", "")
    v2_nonce = h.get("x-plivo-signature-v2-nonce", "")
    method = request.method
    return (
        verify_v3(method, url, params, v3_nonce, h.get("x-plivo-signature-v3", ""), own)
        or verify_v3(method, url, params, v3_nonce, h.get("x-plivo-signature-ma-v3", ""), main)
        or verify_v2(url, v2_nonce, h.get("x-plivo-signature-v2", ""), own)
        or verify_v2(url, v2_nonce, h.get("x-plivo-signature-ma-v2", ""), main)
    )


async def _params(request: Request, settings: Settings) -> tuple[str, dict[str, Any]]:
    if request.method == "GET":
        return "query", parse_form(request.url.query.encode("latin-1"))
    raw = await read_limited(request, settings.GATEWAY_MAX_BODY_BYTES)
    kind = media_type(request)
    if kind == FORM or (not kind and not raw):
        return "form", parse_form(raw)
    if kind == JSON:
        return "json", parse_json(raw)
    raise UnsupportedMediaType(f"callbacks must be {FORM} or {JSON}")


@router.api_route("/callbacks/plivo", methods=["GET", "POST"])
async def receive(request: Request, state: State) -> Response:
    """Take a callback from Plivo: verify its signature, store it durably, answer 200."""
    settings = state.settings
    encoding, params = await _params(request, settings)
    query = request.url.query
    url = f"{settings.GATEWAY_PUBLIC_URL}{request.url.path}" + (f"?{query}" if query else "")
    signed_params = None if request.method == "GET" else params
    if settings.GATEWAY_VERIFY_SIGNATURES and not signature_ok(settings, request, url, signed_params):
        log.warning("callback_rejected", reason="bad_signature")
        raise Forbidden("signature missing or invalid")
    cb_id = callback_id(query if request.method != "GET" else "", params)
    entry = {
        "cb": cb_id,
        "at": int(time.time() * 1000),
        "m": request.method,
        "q": query,
        "enc": encoding,
        "p": params,
    }
    try:
        fresh = await state.store.ingest(cb_id, json.dumps(entry, ensure_ascii=False))
    except (RedisError, OSError) as exc:
        log.error("callback_not_stored", cb=cb_id, error=type(exc).__name__)
        raise Unavailable("callback not stored, retry later") from exc
    log.info("callback", cb=cb_id, outcome="stored" if fresh else "duplicate")
    return Response(status_code=200)
