"""The callback receiver: verify, store durably, answer. Nothing else on the request path.

Correlation and fan-out happen in the worker; this route costs one Redis round trip (the
``ingest`` script: dedup + XADD). It answers 200 only after that script returned, and 503 when
Redis is unreachable so that Plivo retries later.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import logs, metrics
from gateway.api.body import media_type, read_limited
from gateway.callbacks import callback_id, parse_form, parse_json
from gateway.errors import Forbidden, GatewayError, Unavailable, UnsupportedMediaType
from gateway.settings import Settings
from gateway.signing import verify_v2, verify_v3
from gateway.state import GatewayState

log = logs.get("gateway.receiver")

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def _tokens(settings: Settings) -> tuple[list[str], list[str]]:
    own = settings.PLIVO_AUTH_TOKEN.get_secret_value()
    main = settings.PLIVO_MAIN_AUTH_TOKEN.get_secret_value() or own
    return [own], [main]


def verified_nonce(
    settings: Settings, request: Request, url: str, params: dict[str, Any] | None
) -> str | None:
    """The identity of the valid Plivo signature on the request, or None if none is valid.

    ``url`` is rebuilt from GATEWAY_PUBLIC_URL, never from the Host header: behind a proxy the
    URL Plivo signed is the public one. ``-Ma-`` headers are signed with the main account's token.
    The identity (a hash of nonce and signature) lets the store refuse a replayed request."""
    own, main = _tokens(settings)
    h = request.headers
    v3_nonce = h.get("x-plivo-signature-v3-nonce", "")
    v2_nonce = h.get("x-plivo-signature-v2-nonce", "")
    method = request.method
    v3, v3_ma = h.get("x-plivo-signature-v3", ""), h.get("x-plivo-signature-ma-v3", "")
    v2, v2_ma = h.get("x-plivo-signature-v2", ""), h.get("x-plivo-signature-ma-v2", "")
    if verify_v3(method, url, params, v3_nonce, v3, own) or verify_v3(
        method, url, params, v3_nonce, v3_ma, main
    ):
        return _nonce_id("v3", v3_nonce, v3 + v3_ma)
    if verify_v2(url, v2_nonce, v2, own) or verify_v2(url, v2_nonce, v2_ma, main):
        return _nonce_id("v2", v2_nonce, v2 + v2_ma)
    return None


def _nonce_id(version: str, nonce: str, signatures: str) -> str:
    return hashlib.sha256(f"{version}|{nonce}|{signatures}".encode()).hexdigest()[:32]


async def _params(request: Request, settings: Settings) -> tuple[str, dict[str, Any]]:
    if request.method == "GET":
        return "query", parse_form(request.url.query.encode("latin-1"))
    raw = await read_limited(request, settings.GATEWAY_MAX_BODY_BYTES, settings.GATEWAY_BODY_READ_TIMEOUT)
    kind = media_type(request)
    if kind == FORM or (not kind and not raw):
        return "form", parse_form(raw)
    if kind == JSON:
        return "json", parse_json(raw)
    raise UnsupportedMediaType(f"callbacks must be {FORM} or {JSON}")


async def _ingest(state: GatewayState, cb_id: str, entry_json: str, nonce_id: str) -> int:
    """Store the callback; with REDIS_WAIT_REPLICAS, also wait for replicas to hold it, so that a
    failover cannot lose a callback we acknowledged (not enough replicas: 503, Plivo retries)."""
    settings = state.settings
    if not settings.REDIS_WAIT_REPLICAS:
        return await state.store.ingest(cb_id, entry_json, nonce_id)
    timeout_ms = max(1, int(settings.REDIS_WAIT_TIMEOUT * 1000))
    stored, acked = await state.store.ingest_replicated(
        cb_id, entry_json, nonce_id, settings.REDIS_WAIT_REPLICAS, timeout_ms
    )
    if stored == 1 and acked < settings.REDIS_WAIT_REPLICAS:
        # Forget the dedup mark so that Plivo's retry is stored again (a second inbox entry of
        # the same callback is harmless: its event id derives from the callback id).
        await state.redis.delete(state.store.key("dedup", cb_id))
        raise OSError(f"callback reached {acked} of {settings.REDIS_WAIT_REPLICAS} replicas")
    return stored


async def receive(request: Request) -> Response:
    """Take a callback from Plivo: verify its signature, store it durably, answer 200."""
    state: GatewayState = request.app.state.gw
    settings = state.settings
    try:
        encoding, params = await _params(request, settings)
    except GatewayError:
        metrics.CALLBACKS.labels("rejected_input").inc()
        raise
    query = request.url.query
    url = f"{settings.GATEWAY_PUBLIC_URL}{request.url.path}" + (f"?{query}" if query else "")
    signed_params = None if request.method == "GET" else params
    nonce_id = ""
    if settings.GATEWAY_VERIFY_SIGNATURES:
        found = verified_nonce(settings, request, url, signed_params)
        if found is None:
            metrics.CALLBACKS.labels("bad_signature").inc()
            log.warning("callback_rejected", reason="bad_signature")
            raise Forbidden("signature missing or invalid")
        nonce_id = found if settings.GATEWAY_NONCE_WINDOW else ""
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
        stored = await _ingest(state, cb_id, json.dumps(entry, ensure_ascii=False), nonce_id)
    except (RedisError, OSError) as exc:
        metrics.CALLBACKS.labels("not_stored").inc()
        log.error("callback_not_stored", cb=cb_id, error=type(exc).__name__)
        raise Unavailable("callback not stored, retry later") from exc
    if stored < 0:
        # Answered 403: the original of this request was stored and acknowledged already.
        metrics.CALLBACKS.labels("replayed_nonce").inc()
        log.warning("callback_rejected", cb=cb_id, reason="replayed_nonce")
        raise Forbidden("signature nonce already used")
    outcome = "stored" if stored else "duplicate"
    metrics.CALLBACKS.labels(outcome).inc()
    log.info("callback", cb=cb_id, outcome=outcome)
    return Response(status_code=200)


# A plain Starlette route, not a FastAPI one: the hottest path skips dependency solving and
# request-model machinery (about a third of its CPU, docs/performance.md). Errors still go through
# the app's exception handlers, so the answers keep the {"api_id", "error"} shape.
route = Route("/callbacks/plivo", receive, methods=["GET", "POST"], name="receive_callback")
