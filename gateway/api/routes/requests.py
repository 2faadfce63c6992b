"""Submit async requests upstream and read their status."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from dataclasses import replace
from functools import partial
from typing import Annotated, Any, Literal, NotRequired, TypedDict, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from redis.exceptions import RedisError

from gateway.api.body import read_json, validation_message
from gateway.api.deps import ApiKey, State
from gateway.api.models import SubmitBody, WebhookTarget
from gateway.api.pagination import page
from gateway.api.state import GatewayState
from gateway.domain.callbacks import REF_PARAM
from gateway.domain.errors import (
    AcceptedNotRecorded,
    BadGateway,
    BadRequest,
    GatewayError,
    NotFound,
    OutcomeUnknown,
    UpstreamError,
    new_api_id,
)
from gateway.domain.events import EventJson, iso_ms
from gateway.domain.history import attempt_view
from gateway.domain.history import timeline as history_timeline
from gateway.infra import logs, metrics, tracing
from gateway.services import netguard, queue_names
from gateway.services.history_reads import Row, changed, cold_store, merge_page, request_tree
from gateway.services.idempotency import Reply, run_idempotent
from gateway.services.webhook_policy import https_refusal
from gateway.store import NewRequest, now_ms
from gateway.store.records import RequestRecord

router = APIRouter(prefix="/v1/requests", tags=["requests"])
log = logs.get("gateway.requests")


async def _parse_submit(request: Request, state: GatewayState) -> tuple[SubmitBody, str]:
    """The validated body and a hash of its canonical JSON (for Idempotency-Key checks)."""
    data = await read_json(request, state.settings)
    try:
        body = SubmitBody.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(validation_message(exc)) from exc
    if body.timeout is not None and body.timeout > state.settings.GATEWAY_MAX_TIMEOUT:
        raise BadRequest(f"timeout: at most {state.settings.GATEWAY_MAX_TIMEOUT} seconds")
    if body.callback_url:
        # Plivo's own async pattern: the caller's callback_url is a one-off webhook target.
        body.targets.append(WebhookTarget(type="webhook", url=body.callback_url, method=body.callback_method))
    for index, target in enumerate(body.targets):
        if isinstance(target, WebhookTarget):
            why = await netguard.refusal(
                target.url,
                allow_private=state.settings.GATEWAY_ALLOW_PRIVATE_WEBHOOKS,
                allow_cidrs=state.settings.GATEWAY_WEBHOOK_ALLOW_CIDRS,
            )
            why = https_refusal(state.settings, target.url) or why
            if why:
                where = "callback_url" if target.url == body.callback_url else f"targets.{index}.url"
                raise BadRequest(f"{where}: {why}")
        elif why := queue_names.refusal(target.queue, state.settings.GATEWAY_KEY_PREFIX):
            raise BadRequest(f"targets.{index}.queue: {why}")
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return body, hashlib.sha256(canonical.encode()).hexdigest()


# Which parameters carry status-callback URLs, per resource (docs/plivo.md §3).
STATUS_URL_PARAMS = {"Message/": ("url",), "Call/": ("ring_url", "hangup_url")}


def status_url_conflict(body: SubmitBody) -> None:
    """``status_events`` makes the gateway Plivo's status-callback URL: a URL of the caller's in
    the same parameter cannot also get them, so the two together are refused, not half-honoured."""
    if not body.status_events:
        return
    for name in STATUS_URL_PARAMS.get(body.resource, ()):
        if name in body.params:
            raise BadRequest(
                f"params.{name}: with status_events the gateway receives these status callbacks "
                f"itself (as {'message' if name == 'url' else 'call'}.status events); remove "
                f"params.{name}, or drop status_events to have Plivo send them to your URL"
            )


def add_status_urls(resource: str, params: dict[str, Any], receiver: str) -> None:
    for name in STATUS_URL_PARAMS.get(resource, ()):
        if name not in params:
            params[name] = receiver
            params["method" if name == "url" else name.replace("_url", "_method")] = "POST"


async def _send(state: GatewayState, body: SubmitBody, traceparent: str = "") -> Reply:
    ref = secrets.token_urlsafe(12)
    params = dict(body.params)
    params["callback_url"] = f"{state.settings.callback_url}?{REF_PARAM}={ref}"
    params["callback_method"] = "POST"
    if body.status_events:
        add_status_urls(body.resource, params, state.settings.callback_url)
    record = NewRequest(
        api_id="",
        method=body.method,
        resource=body.resource,
        params=body.params,
        metadata=body.metadata,
        targets=[t.model_dump() for t in body.targets],
        timeout_s=body.timeout or state.settings.GATEWAY_DEFAULT_TIMEOUT,
        ref=ref,
        traceparent=traceparent,
    )
    try:
        reply = await state.plivo.request(body.method, body.resource, params)
        api_id = reply.body.get("api_id")
        if not isinstance(api_id, str) or not api_id:
            if body.method == "POST":
                raise OutcomeUnknown("upstream reply carried no api_id")
            raise BadGateway("upstream reply carried no api_id")
    except OutcomeUnknown as exc:
        metrics.SUBMITS.labels("unknown").inc()
        return await _unknown(state, record, exc)
    except GatewayError as exc:
        # A 4xx from Plivo keeps its status; retries given up (429/5xx/network) count as "failed".
        metrics.SUBMITS.labels(str(exc.status_code) if isinstance(exc, UpstreamError) else "failed").inc()
        raise
    metrics.SUBMITS.labels(str(reply.status_code)).inc()
    await save_accepted(state, replace(record, api_id=api_id))
    log.info("submitted", api_id=api_id, resource=body.resource, upstream=reply.status_code)
    return Reply(202, {"api_id": api_id, "message": "async api spawned", "status": "pending"})


async def _unknown(state: GatewayState, record: NewRequest, exc: OutcomeUnknown) -> Reply:
    """A create Plivo may have carried out: kept under its ref as ``unknown`` (its callback, if it
    comes, completes it as usual; else it times out), answered 502, and never sent again. The
    answer is a Reply, not an error, so that an Idempotency-Key remembers it like a success."""
    record = replace(record, api_id=record.ref, status="unknown", upstream_error=exc.message)
    await save_accepted(state, record)
    log.warning("submit_outcome_unknown", ref=record.ref, resource=record.resource, error=exc.message)
    error = (
        f"upstream outcome unknown ({exc.message}): Plivo may have carried the request out, so it was "
        f"not resent; GET /v1/requests/{record.ref} follows it"
    )
    return Reply(502, {"api_id": new_api_id(), "error": error, "status": "unknown", "ref": record.ref})


SAVE_RETRIES_S = (0.1, 0.3, 1.0, 2.0)


async def save_accepted(state: GatewayState, record: NewRequest) -> None:
    """Store a request Plivo has already accepted. Redis failing now must not read as "nothing
    happened, retry": a retry would send the call or SMS twice. So the save is retried for a few
    seconds, and if it still fails the answer is a 502 that names the api_id (its callback will
    surface as callback.unmatched), never the 503 that invites a retry."""
    for delay in (*SAVE_RETRIES_S, None):
        try:
            await state.store.save_request(record)
            return
        except (RedisError, OSError) as exc:
            if delay is None:
                log.error("accepted_not_recorded", api_id=record.api_id, error=type(exc).__name__)
                raise AcceptedNotRecorded(
                    f"upstream accepted the request (api_id {record.api_id}) but it could not be "
                    "recorded; do not resend it"
                ) from exc
            await asyncio.sleep(delay)


@router.post("", status_code=202)
async def submit(request: Request, state: State, key: ApiKey) -> JSONResponse:
    """Send a request to Plivo asynchronously; its result arrives later as events."""
    body, body_hash = await _parse_submit(request, state)
    status_url_conflict(body)
    state.backlog.check()  # 503 while history cannot keep up (nothing is sent upstream)
    traceparent = ""
    if state.settings.GATEWAY_TRACE_PROPAGATION:
        traceparent = tracing.incoming_or_new(request.headers.get("traceparent"))
    incoming = request.headers.get("traceparent") or ""
    with tracing.span(state.settings, "submit", incoming, fallback=traceparent, kind="server") as span:
        traceparent = span.traceparent
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is None:
            reply = await _send(state, body, traceparent)
        else:
            if not 1 <= len(idempotency_key) <= 255:
                raise BadRequest("Idempotency-Key: 1 to 255 characters")
            send = partial(_send, state, body, traceparent)
            reply = await run_idempotent(state.store, state.settings, key, idempotency_key, body_hash, send)
        span.set("callback_gateway.http_status", reply.status)
    headers = {"Location": f"/v1/requests/{reply.body['api_id']}"} if reply.status == 202 else None
    return JSONResponse(reply.body, status_code=reply.status, headers=headers)


def _loads(value: str | None, default: Any) -> Any:
    return json.loads(value) if value else default


def _iso(ms: str | None) -> str | None:
    return iso_ms(int(ms)) if ms else None


class RequestSummary(TypedDict):
    """A request as the list API shows it (the status API adds its result and events)."""

    api_id: str | None
    status: str
    resource: str | None
    metadata: dict[str, Any]  # as the user gave it (JSON)
    submitted_at: str | None
    completed_at: str | None
    upstream_error: NotRequired[str]  # status unknown only
    erased_at: NotRequired[str | None]  # its payloads were erased (DELETE /v1/requests/{api_id})


def _summary(record: RequestRecord) -> RequestSummary:
    summary: RequestSummary = {
        "api_id": record.get("api_id"),
        "status": record.get("status", "pending"),
        "resource": record.get("resource"),
        "metadata": _loads(record.get("metadata"), {}),
        "submitted_at": _iso(record.get("submitted_at")),
        "completed_at": _iso(record.get("completed_at")),
    }
    if record.get("upstream_error"):
        summary["upstream_error"] = record["upstream_error"]
    if record.get("erased_at"):
        summary["erased_at"] = _iso(record.get("erased_at"))
    return summary


@router.get("")
async def list_requests(
    state: State,
    _: ApiKey,
    status: Annotated[Literal["pending", "completed", "timed_out", "unknown"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=20)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Submitted requests, newest first, optionally of one status (Redis and PostgreSQL:
    ``gateway.services.history_reads``)."""
    trees = await changed(state.archive)
    history = cold_store(state.history)
    hot: list[Row[RequestRecord]] = [
        (c.tree.request.submitted_at, c.api_id, cast(RequestRecord, c.tree.request.record))
        for c in trees
        if c.tree.request is not None and (status is None or c.tree.request.status == status)
    ]
    exclude = [c.api_id for c in trees if c.api_id]
    total, estimated, cold = await history.list_requests(status, exclude, 0, offset + limit)
    listing = merge_page(hot, total, cast(list[Row[RequestRecord]], cold), estimated, offset, limit)
    meta = page(
        "/v1/requests", limit, offset, listing.total, {"status": status or ""}, estimated=listing.estimated
    )
    return {
        "api_id": new_api_id(),
        "message": "requests listed",
        **meta,
        "objects": [_summary(r) for r in listing.items],
    }


@router.get("/{api_id}")
async def status(
    api_id: str,
    state: State,
    _: ApiKey,
    wait: Annotated[float, Query(ge=0, le=60)] = 0,
) -> dict[str, Any]:
    """The state of one submitted request, its result, its events and every delivery attempt;
    ``wait`` holds it open (up to 60 s) until the request leaves ``pending``. Read from Redis while
    it is hot, from PostgreSQL (history) once Redis has let it go."""
    if wait > 0:
        await _wait_while_pending(state, api_id, wait)
    tree = await request_tree(state.archive, state.history, api_id)
    if tree is None or tree.request is None:
        raise NotFound(f"no request with api_id {api_id}")
    record = cast(RequestRecord, tree.request.record)  # decode_record's, as either store keeps it
    result_entry = _loads(record.get("result"), None)
    return {
        **_summary(record),
        "api_id": api_id,
        "message": "request found",
        "result": result_entry.get("p") if result_entry else None,
        "events": [e.body for e in tree.events],
        "attempts": [attempt_view(a, iso_ms) for a in tree.attempts],
    }


@router.get("/{api_id}/timeline")
async def timeline(api_id: str, state: State, _: ApiKey) -> dict[str, Any]:
    """Everything that happened to the request, in time order: ``submitted``, ``upstream_reply``,
    each ``callback`` (signature version; early, late), each ``event``, each delivery ``attempt``
    and each queue ``job``. Not paginated."""
    tree = await request_tree(state.archive, state.history, api_id)
    if tree is None or tree.request is None:
        raise NotFound(f"no request with api_id {api_id}")
    return {
        "api_id": api_id,
        "message": "timeline of the request",
        "timeline": history_timeline(tree, iso_ms),
    }


@router.delete("/{api_id}", status_code=204, response_class=Response)
async def erase(api_id: str, state: State, _: ApiKey) -> Response:
    """Erase a finished request's payloads (params, metadata, result, callback bodies, event data,
    answer excerpts) from Redis and PostgreSQL, keeping the bare facts (ids, types, times,
    statuses) with ``erased_at``. A request still pending, or with a delivery still pending, is
    refused (400): erase it once it is finished."""
    tree = await request_tree(state.archive, state.history, api_id)
    if tree is None or tree.request is None:
        raise NotFound(f"no request with api_id {api_id}")
    if tree.request.status in ("pending", "unknown"):
        raise BadRequest(f"request {api_id} is {tree.request.status}: it can be erased once it is finished")
    if any(d.status == "pending" for d in tree.deliveries):
        raise BadRequest(f"request {api_id} has deliveries still pending: erase it once they are final")
    history = cold_store(state.history)
    await state.archive.erase(api_id, tree, now_ms())
    await history.erase(api_id)
    log.info("request_erased", api_id=api_id)
    return Response(status_code=204)


async def _wait_while_pending(
    state: GatewayState, api_id: str, wait: float
) -> tuple[RequestRecord, list[EventJson]] | None:
    # Register before reading, so an event stored between the read and the wait still wakes us.
    wake = state.notifier.register(api_id)
    try:
        deadline = time.monotonic() + wait
        while True:
            found = await state.store.get_request(api_id)
            remaining = deadline - time.monotonic()
            if found is None or found[0].get("status") != "pending" or remaining <= 0:
                return found
            await state.notifier.wait(wake, remaining)
    finally:
        state.notifier.unregister(api_id, wake)
