"""The callback receiver: verify, store durably, answer. Nothing else on the request path.

Correlation and fan-out happen in the worker; this path costs one Lua script per callback (the
``ingest`` script: dedup + XADD). It answers 200 only after that script returned, and 503 when
Redis is unreachable so that Plivo retries later.

It is the hottest path of the gateway, so it is a plain ASGI app that the application calls
ahead of FastAPI's middleware and routing (``gateway.api.app.GatewayApp``), reading the ASGI scope and
messages directly: FastAPI's request handling costs 24-54 us a request, more than the receiver's
own work, and the receiver needs none of it. Its own work is kept lean the same way: the public
URL is split once, the tokens are HMAC keys prepared once, the answer is prebuilt. The same app is
also mounted as an ordinary route, which serves what the fast dispatch leaves to the router (other
methods get the router's 405 with ``Allow``; a server ``root_path``).

Concurrent callbacks share Redis round trips (``gateway.infra.redis_batch``): each still runs its own
ingest script, atomic as before, and is acknowledged only once its own reply is in. redis-py spends
about 70 us of CPU on each command sent alone (pool lock, health check, a task for the write
timeout), more than all the rest of a callback; pipelined 16 at a time, under 25 us (measured on
the 2-core bench machine, EVALSHA with a 300-byte argument).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.api.body import Disconnected, media_type_of, receive_limited
from gateway.api.state import GatewayState
from gateway.domain.callbacks import InboxEntry, callback_id, parse_form, parse_json
from gateway.domain.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    Unavailable,
    UnsupportedMediaType,
    new_api_id,
)
from gateway.domain.signing import Key, split_url, v3_string_from_parts
from gateway.infra import logs, metrics
from gateway.infra.redis_batch import BatchingRedis
from gateway.settings import Settings
from gateway.store import Store, make_store

log = logs.get("gateway.receiver")

PATH = "/callbacks/plivo"
# A callback URL configured with a trailing slash is served too (never redirected: a redirect
# would be built from the Host header, and Plivo does not follow it with its POST body anyway).
PATHS = frozenset({PATH, PATH + "/"})
METHODS = ("GET", "POST")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

_HEADERS = {
    b"content-length",
    b"content-type",
    b"x-plivo-signature-v3",
    b"x-plivo-signature-v3-nonce",
    b"x-plivo-signature-ma-v3",
    b"x-plivo-signature-v2",
    b"x-plivo-signature-v2-nonce",
    b"x-plivo-signature-ma-v2",
}

_OK_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_OK_BODY = {"type": "http.response.body", "body": b""}

_STORED = metrics.CALLBACKS.labels("stored")
_DUPLICATE = metrics.CALLBACKS.labels("duplicate")
_BAD_SIGNATURE = metrics.CALLBACKS.labels("bad_signature")
_REPLAYED = metrics.CALLBACKS.labels("replayed_nonce")
_REJECTED = metrics.CALLBACKS.labels("rejected_input")
_NOT_STORED = metrics.CALLBACKS.labels("not_stored")

# json.dumps with a non-default argument builds an encoder per call; this one is built once.
_entry_json = json.JSONEncoder(ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Verified:
    """A callback's valid signature: its version and the key that refuses its replay."""

    version: str  # v3 | v2
    replay_key: str


class Signatures:
    """Which Plivo signature on a callback is valid, for the configured tokens and public URL.

    The URL is rebuilt from GATEWAY_PUBLIC_URL, never from the Host header: behind a proxy the URL
    Plivo signed is the public one. ``-Ma-`` headers are signed with the main account's token.
    When a callback carries V3 headers, V3 alone decides: a failed V3 check is not retried as V2
    (V2 signs no body, so a seen V2 header pair must not vouch for a body sent with junk V3)."""

    def __init__(self, settings: Settings) -> None:
        own = settings.PLIVO_AUTH_TOKEN.get_secret_value()
        self.own = Key(own)
        self.main = Key(settings.PLIVO_MAIN_AUTH_TOKEN.get_secret_value() or own)
        self.public = settings.GATEWAY_PUBLIC_URL
        self.versions = frozenset(settings.GATEWAY_SIGNATURE_VERSIONS)
        self._bases: dict[str, str] = {}

    def url_parts(self, path: str, query: str) -> tuple[str, str]:
        """``split_url(public + path + ?query)``, with the public part split once per path."""
        base = self._bases.get(path)
        if base is None:
            url = self.public + path
            if "?" in url or "#" in url:  # an odd public URL: split the whole thing every time
                return split_url(url + (f"?{query}" if query else ""))
            base = self._bases[path] = split_url(url)[0]
        return base, query

    def verify(
        self, method: str, path: str, query: str, params: dict[str, Any] | None, headers: dict[bytes, str]
    ) -> Verified | None:
        """The valid signature's version and replay key, or None if no accepted signature is valid.

        The replay key is (version, nonce) whatever the header's spelling: the signature header
        may list several signatures (any may match), so its text is not an identity."""
        nonce = headers.get(b"x-plivo-signature-v3-nonce", "")
        v3, v3_ma = headers.get(b"x-plivo-signature-v3", ""), headers.get(b"x-plivo-signature-ma-v3", "")
        if nonce or v3 or v3_ma:
            if "v3" not in self.versions or not nonce:
                return None
            base, signed_query = self.url_parts(path, query)
            message = f"{v3_string_from_parts(method, base, signed_query, params)}.{nonce}"
            if self.own.matches(message, v3) or self.main.matches(message, v3_ma):
                return Verified("v3", _replay_key("v3", nonce))
            return None
        nonce = headers.get(b"x-plivo-signature-v2-nonce", "")
        v2, v2_ma = headers.get(b"x-plivo-signature-v2", ""), headers.get(b"x-plivo-signature-ma-v2", "")
        if nonce and (v2 or v2_ma) and "v2" in self.versions:
            message = self.url_parts(path, query)[0] + nonce
            if self.own.matches(message, v2) or self.main.matches(message, v2_ma):
                return Verified("v2", _replay_key("v2", nonce))
        return None


def _replay_key(version: str, nonce: str) -> str:
    return hashlib.sha256(f"{version}|{nonce}".encode()).hexdigest()[:32]


def _raw_entry(entry: InboxEntry, payload: str | bytes, problem: GatewayError) -> tuple[str, InboxEntry]:
    """A signed callback whose payload did not parse, kept as it came: ``raw`` (text, or
    ``raw_b64`` when it is not UTF-8) and ``perr``, why it did not parse. Its identity is the
    payload's, so Plivo's retries of it are duplicates."""
    raw: InboxEntry = {**entry, "enc": "raw"}  # its keys keep their places, the payload and perr go last
    if isinstance(payload, str):
        raw["raw"] = payload
    else:
        try:
            raw["raw"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            raw["raw_b64"] = base64.b64encode(payload).decode("ascii")
    kept = {"raw": raw["raw"]} if "raw" in raw else {"raw_b64": raw["raw_b64"]}
    raw["cb"] = cb_id = callback_id(entry["q"], kept)
    raw["perr"] = problem.message
    return cb_id, raw


def _headers(scope: Scope) -> dict[bytes, str]:
    """The headers the receiver reads; the first of repeated ones, as Starlette's ``get`` does."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _HEADERS and name not in found:
            found[name] = value.decode("latin-1")
    return found


def _query(scope: Scope) -> str:
    try:
        query: str = scope.get("query_string", b"").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("query string is not valid UTF-8") from exc
    if "#" in query or "\t" in query or "\r" in query or "\n" in query:
        # Read as Starlette's ``request.url.query`` reads it: urlsplit cuts at '#' and drops tabs
        # and newlines (uvicorn never passes one of them; other ASGI servers might).
        query = urlsplit(f"http://h/?{query}").query
    return query


class Receiver:
    """The ASGI app behind ``/callbacks/plivo``: verify the signature, store durably, answer 200.

    Errors have the API's shape (``{"api_id", "error"}``) and statuses: 400/408/413/415 for bad
    input, 403 for a bad or replayed signature, 503 when the callback could not be stored, 500 with
    an ``api_id`` that is also in the log for anything unexpected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signatures = Signatures(settings) if settings.GATEWAY_VERIFY_SIGNATURES else None
        self.nonces = bool(settings.GATEWAY_NONCE_WINDOW)
        self.state: GatewayState | None = None
        self.store: Store | None = None

    def open(self, state: GatewayState) -> None:
        """Start serving with the lifespan's clients (called once they exist)."""
        self.state = state
        self.store = make_store(state.settings, BatchingRedis(state.redis))

    def routes(self) -> list[Route]:
        return [
            Route(path, self, methods=list(METHODS), name=f"receive_callback{i}")
            for i, path in enumerate(sorted(PATHS))
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.receive(scope, receive)
        except GatewayError as exc:
            response = JSONResponse(
                {"api_id": new_api_id(), "error": exc.message}, exc.status_code, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        except Disconnected:
            return  # nothing stored, nobody to answer; Plivo sends it again
        except Exception:
            api_id = new_api_id()
            log.exception("unhandled_error", api_id=api_id, path=scope.get("path"))
            response = JSONResponse({"api_id": api_id, "error": "internal server error"}, 500)
            await response(scope, receive, send)
            return
        await send(_OK_START)
        await send(_OK_BODY)

    async def receive(self, scope: Scope, receive: Receive) -> None:
        """Take a callback from Plivo: verify its signature, store it durably (then 200).

        A payload that does not parse (bad JSON, an unknown content type, too many fields) is
        refused with its 4xx unless its signature verifies without it (V2 signs no body; V3
        then as a POST without params): a callback Plivo signed is never refused into oblivion,
        since Plivo stops retrying; it is stored raw and surfaces as ``callback.unmatched``."""
        method: str = scope["method"]
        headers = _headers(scope)
        try:
            query = _query(scope)
            raw = b"" if method == "GET" else await self._body(headers, receive)
        except GatewayError:
            _REJECTED.inc()
            raise
        odd: GatewayError | None = None
        try:
            encoding, params = self._parse(method, query, headers, raw)
        except GatewayError as exc:
            encoding, params, odd = "raw", {}, exc
        version, replay_key = self._verify(
            scope, method, query, params if odd is None else None, headers, odd
        )
        cb_id, entry = self._entry(method, query, encoding, params, version)
        if odd is not None:
            cb_id, entry = _raw_entry(entry, query if method == "GET" else raw, odd)
        await self._store(cb_id, _entry_json(entry), replay_key)

    def _verify(
        self,
        scope: Scope,
        method: str,
        query: str,
        params: dict[str, Any] | None,
        headers: dict[bytes, str],
        odd: GatewayError | None,
    ) -> tuple[str, str]:
        """(signature version, replay key) of a valid signature, ``("", "")`` with verification
        off; otherwise the callback is refused: with its parse error if it had one, else 403."""
        if self.signatures is None:
            return "", ""
        path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
        found = self.signatures.verify(method, path, query, None if method == "GET" else params, headers)
        if found is None:
            if odd is not None:
                _REJECTED.inc()
                raise odd
            _BAD_SIGNATURE.inc()
            log.warning("callback_rejected", reason="bad_signature")
            raise Forbidden("signature missing or invalid")
        return found.version, found.replay_key if self.nonces else ""

    @staticmethod
    def _entry(
        method: str, query: str, encoding: str, params: dict[str, Any], version: str
    ) -> tuple[str, InboxEntry]:
        cb_id = callback_id("" if method == "GET" else query, params)
        entry: InboxEntry = {
            "cb": cb_id,
            "at": int(time.time() * 1000),
            "m": method,
            "q": query,
            "enc": encoding,
            "p": params,
        }
        if version:
            entry["sv"] = version
        return cb_id, entry

    async def _store(self, cb_id: str, entry_json: str, replay_key: str) -> None:
        if self.state is not None and self.state.backlog.full:
            _NOT_STORED.inc()
            self.state.backlog.check()  # 503: Plivo sends it again once history has caught up
        try:
            stored = await self._ingest(cb_id, entry_json, replay_key)
        except (RedisError, OSError) as exc:
            _NOT_STORED.inc()
            log.error("callback_not_stored", cb=cb_id, error=type(exc).__name__)
            raise Unavailable("callback not stored, retry later") from exc
        if stored < 0:
            # Answered 403: the original of this request was stored and acknowledged already.
            _REPLAYED.inc()
            log.warning("callback_rejected", cb=cb_id, reason="replayed_nonce")
            raise Forbidden("signature nonce already used")
        if stored:
            _STORED.inc()
            log.info("callback", cb=cb_id, outcome="stored")
        else:
            _DUPLICATE.inc()
            log.info("callback", cb=cb_id, outcome="duplicate")

    async def _body(self, headers: dict[bytes, str], receive: Receive) -> bytes:
        settings = self.settings
        return await receive_limited(
            receive,
            headers.get(b"content-length"),
            settings.GATEWAY_MAX_BODY_BYTES,
            settings.GATEWAY_BODY_READ_TIMEOUT,
        )

    @staticmethod
    def _parse(method: str, query: str, headers: dict[bytes, str], raw: bytes) -> tuple[str, dict[str, Any]]:
        if method == "GET":
            return "query", parse_form(query.encode("utf-8"))
        kind = media_type_of(headers.get(b"content-type", ""))
        if kind == FORM or (not kind and not raw):
            return "form", parse_form(raw)
        if kind == JSON:
            return "json", parse_json(raw)
        raise UnsupportedMediaType(f"callbacks must be {FORM} or {JSON}")

    async def _ingest(self, cb_id: str, entry_json: str, nonce_id: str) -> int:
        """Store the callback; with REDIS_WAIT_REPLICAS, also wait for replicas to hold it, so
        that a failover cannot lose a callback we acknowledged (not enough replicas: 503, Plivo
        retries). That path keeps its own connection per callback: WAIT counts the replicas that
        acknowledged the writes of the connection it is sent on."""
        if self.store is None or self.state is None:
            raise RuntimeError("receiver used before the application started")
        settings = self.settings
        if not settings.REDIS_WAIT_REPLICAS:
            return await self.store.ingest(cb_id, entry_json, nonce_id)
        state = self.state
        timeout_ms = max(1, int(settings.REDIS_WAIT_TIMEOUT * 1000))
        stored, acked = await state.store.ingest_replicated(
            cb_id, entry_json, nonce_id, settings.REDIS_WAIT_REPLICAS, timeout_ms
        )
        if stored == 1 and acked < settings.REDIS_WAIT_REPLICAS:
            # Forget the dedup mark and the nonce so that Plivo's retry (same nonce) is stored
            # again (a second inbox entry of the same callback is harmless: its event id derives
            # from the callback id).
            await state.store.forget_ingest(cb_id, nonce_id)
            raise OSError(f"callback reached {acked} of {settings.REDIS_WAIT_REPLICAS} replicas")
        return stored
