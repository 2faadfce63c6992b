"""Delivering one event to one target, written as named phases.

prepare (lease) -> send -> record success | record failure (+ schedule the retry).

A lease (``lease:{delivery_id}``, expiring after the attempt timeout plus a margin) keeps two
workers from attempting the same delivery at once; the per-attempt HTTP timeout is always shorter
than the lease, so a slow endpoint cannot cause a second concurrent attempt.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gateway import logs
from gateway.signing import sign_webhook
from gateway.store import now_ms
from workers.context import WorkerContext
from workers.retry import Outcome, classify_status, next_delay

log = logs.get("workers.delivery")

DELIVER_JOB = "cg_deliver"
LEASE_MARGIN_S = 5.0


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    status_code: int | None
    error: str
    retry_after: float | None


def target_key(target: dict[str, Any]) -> str:
    if target.get("type") == "queue":
        return f"queue:{target['queue']}:{target['function']}"
    return f"webhook:{target['url']}"


def delivery_id(event_id: str, target: dict[str, Any]) -> str:
    import hashlib

    digest = hashlib.sha256(f"{event_id}|{target_key(target)}".encode()).hexdigest()
    return f"dlv_{digest[:24]}"


async def _lease(ctx: WorkerContext, dlv_id: str) -> str | None:
    token = secrets.token_hex(8)
    ttl_ms = int((ctx.settings.GATEWAY_DELIVERY_TIMEOUT + LEASE_MARGIN_S) * 1000)
    ok = await ctx.redis.set(ctx.deliveries.key("lease", dlv_id), token, nx=True, px=ttl_ms)
    return token if ok else None


async def _release(ctx: WorkerContext, dlv_id: str) -> None:
    await ctx.redis.delete(ctx.deliveries.key("lease", dlv_id))


async def _send_webhook(ctx: WorkerContext, url: str, event: dict[str, Any]) -> Attempt:
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "callback-gateway/0.1",
        "webhook-id": str(event["id"]),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook([ctx.webhook_secret], str(event["id"]), timestamp, body),
    }
    try:
        async with ctx.http.stream("POST", url, content=body, headers=headers) as response:
            await _drain(response, ctx.settings.GATEWAY_MAX_RESPONSE_BYTES)
    except httpx.TimeoutException as exc:
        return Attempt(Outcome.TIMEOUT, None, f"timeout: {type(exc).__name__}", None)
    except httpx.HTTPError as exc:
        return Attempt(Outcome.CONNECT_ERROR, None, f"{type(exc).__name__}: {exc}"[:200], None)
    outcome = classify_status(response.status_code)
    retry_after = None
    if outcome is Outcome.RATE_LIMITED:
        try:
            retry_after = float(response.headers.get("retry-after", ""))
        except ValueError:
            retry_after = None
    return Attempt(outcome, response.status_code, "", retry_after)


async def _drain(response: httpx.Response, limit: int) -> bytes:
    """Read at most ``limit`` bytes of the answer; the rest is never read."""
    buf = b""
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) >= limit:
            break
    return buf[:limit]


async def _enqueue(ctx: WorkerContext, dlv_id: str, target: dict[str, Any], event: Any) -> Attempt:
    # The job id is the delivery id: arq refuses a second job with the same id while the first
    # (or its result) exists, so reprocessing after a crash cannot enqueue the event twice.
    await ctx.arq.enqueue_job(target["function"], event, _job_id=f"cg:{dlv_id}", _queue_name=target["queue"])
    return Attempt(Outcome.SUCCESS, None, "", None)


async def attempt_delivery(ctx: WorkerContext, dlv_id: str, event: dict[str, Any]) -> str:
    """Run one attempt of delivery ``dlv_id`` if it is still pending. Returns its new status."""
    record = await ctx.deliveries.get_delivery(dlv_id)
    if record.get("status") != "pending":
        return record.get("status", "missing")
    lease = await _lease(ctx, dlv_id)
    if lease is None:
        return "leased"
    try:
        target = json.loads(record["target"])
        attempts = int(record.get("attempts", "0")) + 1
        started = time.monotonic()
        if target.get("type") == "queue":
            result = await _enqueue(ctx, dlv_id, target, event)
        else:
            result = await _send_webhook(ctx, target["url"], event)
        took_ms = round((time.monotonic() - started) * 1000, 1)
        status = await _record(ctx, dlv_id, attempts, result)
        log.info(
            "delivery",
            event_id=event["id"],
            delivery_id=dlv_id,
            attempt=attempts,
            outcome=result.outcome.value,
            code=result.status_code,
            ms=took_ms,
            status=status,
        )
        return status
    finally:
        await _release(ctx, dlv_id)


async def _record(ctx: WorkerContext, dlv_id: str, attempts: int, result: Attempt) -> str:
    if result.outcome is Outcome.SUCCESS:
        return await ctx.deliveries.record_attempt(
            dlv_id,
            status="succeeded",
            attempts=attempts,
            code=result.status_code,
            error="",
            next_at=None,
        )
    delay = next_delay(
        attempts,
        result.outcome,
        ctx.settings.GATEWAY_RETRY_SCHEDULE,
        retry_after=result.retry_after,
        overload_floor=ctx.settings.GATEWAY_OVERLOAD_FLOOR,
    )
    error = result.error or f"HTTP {result.status_code}"
    if delay is None:
        return await ctx.deliveries.record_attempt(
            dlv_id,
            status="failed",
            attempts=attempts,
            code=result.status_code,
            error=error,
            next_at=None,
        )
    next_at = now_ms() + int(delay * 1000)
    # Schedule first, then record: a crash in between leaves a retry job that finds the
    # delivery pending and simply makes the attempt (never a pending delivery with no job).
    await ctx.arq.enqueue_job(
        DELIVER_JOB,
        dlv_id,
        _job_id=f"{dlv_id}:{attempts + 1}",
        _defer_by=delay,
        _queue_name=ctx.queue_name,
    )
    return await ctx.deliveries.record_attempt(
        dlv_id,
        status="pending",
        attempts=attempts,
        code=result.status_code,
        error=error,
        next_at=next_at,
    )


async def deliver_job(ctx: dict[str, Any], dlv_id: str) -> str:
    """arq job: the next attempt of a delivery whose earlier attempt failed."""
    wctx: WorkerContext = ctx["gw"]
    record = await wctx.deliveries.get_delivery(dlv_id)
    if record.get("status") != "pending":
        return record.get("status", "missing")
    event = await wctx.deliveries.get_event(record["event_id"])
    if event is None:
        return "expired"
    return await attempt_delivery(wctx, dlv_id, event)
