"""A local stand-in for Plivo's REST API, for development and tests.

It speaks what ``docs/plivo.md`` describes: ``/v1/Account/{auth_id}/{resource}``,
HTTP Basic auth, JSON bodies on POST, ``{"api_id", "message"}`` / ``{"api_id", "error"}`` replies.
A request carrying ``callback_url`` is answered ``async api spawned`` and its result is then sent
to ``callback_url`` with ``callback_method``, signed like Plivo signs (V3; V2 for ``Message/``).
A message request with a ``url`` parameter also gets status callbacks (queued, sent, delivered).

Knobs for tests, set with ``POST /_sandbox/config`` (JSON, merged into the current config):

* ``delay`` seconds before the callback; ``encoding`` ``form`` | ``json``; ``duplicates`` extra
  copies of each callback; ``callback_first`` sends (and awaits) the callback before replying;
  ``signature`` ``auto`` | ``v3`` | ``v2`` | ``none`` | ``bad``; ``status_callbacks`` on/off;
  ``status_spacing`` seconds before each status callback (0: right after the result, as a burst);
  ``replies``: a list of canned replies (``{"status", "error", "retry_after", "executed", "sleep"}``)
  used one per request before normal service resumes (``executed``: the request is carried out all
  the same, callbacks included, as when Plivo acts and then fails to answer; ``sleep``: seconds
  before answering, past the client's read timeout to make one); ``sync_status`` /
  ``async_status`` the HTTP status of replies; ``retries`` times a callback that failed (no answer
  in time, or not 2xx) is sent again, ``retry_delay`` seconds apart, doubling (Plivo retries
  messaging callbacks 60, 120 and 240 s apart; the default, 0, sends each callback once).

``GET /_sandbox/requests`` lists what arrived (with monotonic timestamps) and
``GET /_sandbox/callbacks`` what was sent back and how the gateway answered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.domain.signing import sign_v2, sign_v3
from gateway.infra import keepalive

DEFAULT_CONFIG: dict[str, Any] = {
    "delay": 0.05,
    "encoding": "form",
    "duplicates": 0,
    "callback_first": False,
    "signature": "auto",
    "status_callbacks": True,
    "status_spacing": 0,
    "replies": [],
    "sync_status": 200,
    "async_status": 200,
    "retries": 0,
    "retry_delay": 1.0,
}

REQUIRED = {"Call/": ("from", "to", "answer_url"), "Message/": ("dst", "text")}


@dataclass
class SandboxState:
    auth_id: str
    auth_token: str
    config: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_CONFIG)))
    requests: list[dict[str, Any]] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _reply(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _authorized(request: Request, st: SandboxState, auth_id: str) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return (
        hmac.compare_digest(user, st.auth_id)
        and hmac.compare_digest(password, st.auth_token)
        and auth_id == st.auth_id
    )


def _result(resource: str, params: dict[str, Any], api_id: str) -> dict[str, Any]:
    if resource == "Message/":
        dst = str(params.get("dst") or params.get("to") or "")
        count = max(1, len([d for d in dst.split("<") if d]))
        uuids = [str(uuid.uuid4()) for _ in range(count)]
        return {"api_id": api_id, "message": "message(s) queued", "message_uuid": uuids}
    if resource == "Call/":
        to = str(params.get("to", ""))
        if "<" in to:
            fired = [str(uuid.uuid4()) for d in to.split("<") if d]
            return {"api_id": api_id, "message": "calls fired", "request_uuid": fired}
        return {"api_id": api_id, "message": "call fired", "request_uuid": str(uuid.uuid4())}
    return {"api_id": api_id, "message": "executed"}


def _signed_headers(
    st: SandboxState, scheme: str, method: str, url: str, params: dict[str, Any] | None
) -> dict[str, str]:
    nonce = str(secrets.randbelow(10**20))
    if scheme == "none":
        return {}
    token = st.auth_token if scheme != "bad" else "not-" + st.auth_token
    if scheme == "v2":
        return {
            "X-Plivo-Signature-V2": sign_v2(url, nonce, token),
            "X-Plivo-Signature-V2-Nonce": nonce,
        }
    return {
        "X-Plivo-Signature-V3": sign_v3(method, url, params, nonce, token),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


async def send_callback(
    st: SandboxState,
    http: httpx.AsyncClient,
    url: str,
    method: str,
    payload: dict[str, Any],
    scheme: str,
) -> None:
    """Send one callback as Plivo would; record how the receiver answered."""
    target = url.split("#", 1)[0]  # the fragment carries Plivo's retry settings, never sent
    encoding = st.config["encoding"]

    def build() -> httpx.Request:  # signed afresh each time, as Plivo signs each retry
        if method == "GET":
            sep = "&" if "?" in target else "?"
            full = target + sep + urlencode(payload, doseq=True)
            headers = _signed_headers(st, scheme, "GET", full, None)
            request = http.build_request("GET", full, headers=headers)
        elif encoding == "json":
            headers = _signed_headers(st, scheme, "POST", target, payload)
            request = http.build_request("POST", target, json=payload, headers=headers)
        else:
            headers = _signed_headers(st, scheme, "POST", target, payload)
            request = http.build_request(
                "POST",
                target,
                content=urlencode(payload, doseq=True),
                headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            )
        return request

    delay = float(st.config["retry_delay"])
    for attempt in range(1 + int(st.config["retries"])):
        if attempt:
            await asyncio.sleep(delay)
            delay *= 2
        record: dict[str, Any] = {"url": url, "method": method, "payload": payload, "at": time.time()}
        try:
            response = await http.send(build())
            record["status"] = response.status_code
        except httpx.HTTPError as exc:
            record["status"] = None
            record["error"] = type(exc).__name__
        st.callbacks.append(record)
        if record["status"] is not None and 200 <= record["status"] < 300:
            return


def _status_payloads(result: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for message_uuid in result.get("message_uuid", []):
        for seq, status in enumerate(("queued", "sent", "delivered"), start=1):
            out.append(
                {
                    "MessageUUID": message_uuid,
                    "Status": status,
                    "Sequence": str(seq),
                    "To": str(params.get("dst", "")),
                    "From": str(params.get("src", "")),
                    "Type": "sms",
                    "Units": "1",
                    "TotalRate": "0.0050",
                    "TotalAmount": "0.0050",
                    "MCC": "310",
                    "MNC": "260",
                    "ParentMessageUUID": message_uuid,
                    "PartInfo": "1 of 1",
                    "ErrorCode": "",
                }
            )
    return out


async def _deliver_all(
    st: SandboxState,
    http: httpx.AsyncClient,
    resource: str,
    params: dict[str, Any],
    result: dict[str, Any],
    delay: float,
) -> None:
    if delay:
        await asyncio.sleep(delay)
    scheme = st.config["signature"]
    if scheme == "auto":
        scheme = "v2" if resource == "Message/" else "v3"
    cb_url = str(params["callback_url"])
    cb_method = str(params.get("callback_method", "POST")).upper()
    for _ in range(1 + int(st.config["duplicates"])):
        await send_callback(st, http, cb_url, cb_method, result, scheme)
    status_url = params.get("url")
    if resource == "Message/" and status_url and st.config["status_callbacks"]:
        method = str(params.get("method", "POST")).upper()
        for payload in _status_payloads(result, params):
            if st.config["status_spacing"]:
                await asyncio.sleep(float(st.config["status_spacing"]))
            await send_callback(st, http, str(status_url), method, payload, scheme)


async def _read_params(request: Request, api_id: str) -> dict[str, Any] | JSONResponse:
    if request.method != "POST":
        return dict(request.query_params)
    if not request.headers.get("content-type", "").startswith("application/json"):
        return _reply(415, {"api_id": api_id, "error": "Content-Type must be application/json"})
    try:
        params = await request.json()
    except ValueError:
        return _reply(400, {"api_id": api_id, "error": "invalid JSON body"})
    if not isinstance(params, dict):
        return _reply(400, {"api_id": api_id, "error": "body must be a JSON object"})
    return params


@dataclass(frozen=True, slots=True)
class Canned:
    response: JSONResponse
    executed: bool  # the request is carried out (callbacks and all), the canned reply comes back
    sleep: float  # seconds before the reply (longer than the client's read timeout: a timeout)


def _canned(st: SandboxState, api_id: str) -> Canned | None:
    if not st.config["replies"]:
        return None
    canned = st.config["replies"].pop(0)
    headers = {"Retry-After": str(canned["retry_after"])} if "retry_after" in canned else None
    body = {"api_id": api_id, "error": canned.get("error", "canned failure")}
    response = _reply(int(canned.get("status", 200)), body, headers)
    return Canned(response, bool(canned.get("executed")), float(canned.get("sleep", 0)))


def _missing(resource: str, params: dict[str, Any]) -> str | None:
    for name in REQUIRED.get(resource, ()):
        if name not in params and not (name == "dst" and "to" in params):
            return name
    return None


async def _handle(
    st: SandboxState, http: httpx.AsyncClient, auth_id: str, resource: str, request: Request
) -> JSONResponse:
    api_id = str(uuid.uuid1())
    if not _authorized(request, st, auth_id):
        return _reply(401, {"api_id": api_id, "error": "authentication failed"})
    params = await _read_params(request, api_id)
    if isinstance(params, JSONResponse):
        return params
    st.requests.append(
        {
            "at": time.monotonic(),
            "method": request.method,
            "resource": resource,
            "params": params,
            "api_id": api_id,
        }
    )
    canned = _canned(st, api_id)
    if canned is not None and canned.sleep:
        await asyncio.sleep(canned.sleep)
    if canned is not None and not canned.executed:
        return canned.response
    missing = _missing(resource, params)
    if missing:
        return _reply(400, {"api_id": api_id, "error": f"{missing} parameter is missing"})
    result = _result(resource, params, api_id)
    if canned is None and "callback_url" not in params:
        return _reply(int(st.config["sync_status"]), result)
    if st.config["callback_first"]:
        await _deliver_all(st, http, resource, params, result, 0)
    else:
        task = asyncio.create_task(
            _deliver_all(st, http, resource, params, result, float(st.config["delay"]))
        )
        st.tasks.add(task)
        task.add_done_callback(st.tasks.discard)
    if canned is not None:
        return canned.response
    reply = {"api_id": api_id, "message": "async api spawned"}
    return _reply(int(st.config["async_status"]), reply)


def create_sandbox(auth_id: str, auth_token: str) -> FastAPI:
    st = SandboxState(auth_id, auth_token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(keepalive_expiry=keepalive.IDLE_SECONDS)  # as Plivo's own senders should
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as http:
            app.state.http = http
            yield
            for task in list(st.tasks):
                task.cancel()

    app = FastAPI(title="plivo-sandbox", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.sandbox = st

    @app.post("/_sandbox/config")
    async def configure(request: Request) -> dict[str, Any]:
        """Change the sandbox's behaviour (merged into the current config)."""
        update = await request.json()
        if update.get("reset"):
            st.config = json.loads(json.dumps(DEFAULT_CONFIG))
            st.requests.clear()
            st.callbacks.clear()
        st.config.update({k: v for k, v in update.items() if k in DEFAULT_CONFIG})
        return st.config

    @app.get("/_sandbox/requests")
    async def list_requests() -> list[dict[str, Any]]:
        """Requests that reached the sandbox, oldest first."""
        return st.requests

    @app.get("/_sandbox/callbacks")
    async def list_callbacks() -> list[dict[str, Any]]:
        """Callbacks the sandbox sent, and the status each got."""
        return st.callbacks

    @app.api_route("/v1/Account/{auth_id}/{resource:path}", methods=["GET", "POST", "DELETE"])
    async def api(auth_id: str, resource: str, request: Request) -> JSONResponse:
        """Plivo's API, as far as async requests go."""
        return await _handle(st, app.state.http, auth_id, resource, request)

    return app
