"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError

from gateway.api.deps import State
from gateway.domain.errors import Unauthorized, new_api_id
from gateway.infra import logs, metrics
from gateway.infra.metrics import Gauges

router = APIRouter(tags=["operations"])
log = logs.get("gateway.health")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {"description": "not ready: Redis unreachable, no worker heartbeat, or history backlog full"}
    },
)
async def readyz(state: State) -> JSONResponse:
    """Ready to take traffic: Redis answers, (unless GATEWAY_READY_REQUIRES_WORKER is false) a
    worker's heartbeat is fresh, and the history backlog is below GATEWAY_HISTORY_BACKLOG_MAX.
    ``history`` says whether PostgreSQL is reachable (down alone does not make it unready)."""
    settings = state.settings
    try:
        await state.redis.ping()
        age = await state.ops.freshest_beat_age()
    except (RedisError, OSError):
        down = {"api_id": new_api_id(), "error": "not ready: Redis unreachable"}
        return JSONResponse({**down, "status": "unavailable", "redis": "down"}, status_code=503)
    fresh = age is not None and age <= settings.WORKER_HEARTBEAT_TTL
    backlog = state.backlog
    history_error = await state.history.check()
    body = {
        "status": "ready",
        "redis": "up",
        "worker": "up" if fresh else "down",
        "worker_heartbeat_age": None if age is None else round(age, 3),
        # PostgreSQL down does not stop ingest or delivery: history waits in the backlog.
        "history": "down" if history_error else "up",
        "history_backlog": backlog.size,
        "history_backlog_max": backlog.limit,
    }
    if history_error:
        body["history_error"] = history_error
    if backlog.full:
        error = {"api_id": new_api_id(), "error": "not ready: history backlog full (PostgreSQL behind)"}
        return JSONResponse({**error, **body, "status": "unavailable"}, status_code=503)
    if settings.GATEWAY_READY_REQUIRES_WORKER and not fresh:
        error = {"api_id": new_api_id(), "error": "not ready: no worker heartbeat"}
        return JSONResponse({**error, **body, "status": "unavailable"}, status_code=503)
    return JSONResponse(body)


async def require_metrics_token(request: Request, state: State) -> None:
    """With ``GATEWAY_METRICS_TOKEN`` set, only a scraper presenting it may read /metrics. Compared
    in constant time (``hmac.compare_digest``); the refusal never echoes what was sent."""
    secret = state.settings.GATEWAY_METRICS_TOKEN
    expected = secret.get_secret_value() if secret is not None else ""
    if not expected:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong metrics token (Authorization: Bearer <token>)")


MetricsToken = Annotated[None, Depends(require_metrics_token)]


@router.get(
    "/metrics",
    responses={401: {"description": "GATEWAY_METRICS_TOKEN is set: bearer token missing or wrong"}},
)
async def prometheus_metrics(state: State, _: MetricsToken) -> Response:
    """Prometheus text: this process's counters plus gauges read from Redis now."""
    gauges: Gauges | None
    try:
        gauges = await state.ops.gauges(state.settings.WORKER_HEARTBEAT_TTL)
    except (RedisError, OSError) as exc:
        log.warning("metrics_redis_unavailable", error=type(exc).__name__)
        gauges = None
    return Response(metrics.render(gauges), media_type=metrics.CONTENT_TYPE_LATEST)
