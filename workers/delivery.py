"""Delivering one event to one target, written as named phases.

prepare (is it still due? lease, admission) -> send -> settle (breaker, auto-disable)
-> record success | record failure (+ the retry job, in the same script).

* A lease (``lease:{delivery_id}``, expiring after the attempt timeout plus a margin) keeps two
  workers from attempting the same delivery at once. Every attempt runs under one overall
  deadline (``GATEWAY_DELIVERY_TIMEOUT``, connect + send + read), shorter than the lease and than
  the arq job timeout, so a slow endpoint can never see a second concurrent attempt.
* Jobs carry (cycle, attempt). A job whose attempt already happened (a duplicate after a crash)
  does nothing; a job that finds the lease taken or is refused admission (subscription over its
  rate or concurrency, breaker open) re-queues the same attempt for later without counting it.
* Subscriptions sign with every secret they currently hold (two during a rotation); request
  targets sign with the gateway's ``GATEWAY_WEBHOOK_SECRET``. ``webhook-id`` is the event id on
  every attempt, so receivers can deduplicate.
* Queue targets become an arq job whose id derives from the delivery and its cycle: reprocessing
  never enqueues twice, an explicit retry/replay (a new cycle) does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx

from gateway import logs, metrics, tracing
from gateway.events import envelope, iso_ms
from gateway.settings import Settings
from gateway.signing import sign_webhook
from gateway.store.delivery import DELIVER_JOB, OPERATOR_EVENT_JOB, BreakerPolicy
from workers import relay
from workers.context import WorkerContext
from workers.retry import Outcome, classify_status, next_delay, parse_retry_after

log = logs.get("workers.delivery")

__all__ = ["DELIVER_JOB", "attempt_delivery", "deliver_job", "delivery_id"]

LEASE_MARGIN_S = 5.0
# A delivery refused for the subscription's concurrency cap tries again this much later.
CONCURRENCY_WAIT_MS = 250


@dataclass(frozen=True, slots=True)
class Attempt:
    outcome: Outcome
    status_code: int | None
    error: str
    retry_after: float | None
    body: str = ""
    ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Job:
    dlv_id: str
    event: dict[str, Any]
    target: dict[str, Any]
    sub: dict[str, str] | None
    cycle: int
    attempt: int


def target_key(target: dict[str, Any]) -> str:
    if target.get("subscription"):
        return f"sub:{target['subscription']}"
    if target.get("type") == "queue":
        return f"queue:{target['queue']}:{target['function']}"
    if target.get("type") == relay.RELAY:
        return f"relay:{target['url']}"
    return f"webhook:{target['url']}"


def delivery_id(event_id: str, target: dict[str, Any]) -> str:
    digest = hashlib.sha256(f"{event_id}|{target_key(target)}".encode()).hexdigest()
    return f"dlv_{digest[:24]}"


def lease_ttl_ms(ctx: WorkerContext) -> int:
    return int((ctx.settings.GATEWAY_DELIVERY_TIMEOUT + LEASE_MARGIN_S) * 1000)


def job_timeout(settings: Settings) -> float:
    """arq's timeout for a delivery job: always longer than one attempt and its lease."""
    return max(settings.GATEWAY_DELIVERY_TIMEOUT * 3, settings.GATEWAY_DELIVERY_TIMEOUT + LEASE_MARGIN_S * 2)


def breaker_policy(ctx: WorkerContext) -> BreakerPolicy:
    s = ctx.settings
    return BreakerPolicy(
        window_ms=int(s.GATEWAY_BREAKER_WINDOW * 1000),
        min_requests=s.GATEWAY_BREAKER_MIN_REQUESTS,
        failure_rate=s.GATEWAY_BREAKER_FAILURE_RATE,
        cooldown_ms=int(s.GATEWAY_BREAKER_COOLDOWN * 1000),
        disable_after_ms=int(s.GATEWAY_DISABLE_AFTER * 1000),
    )


# --- prepare ------------------------------------------------------------------------------------


def _skip_reason(record: dict[str, str], cycle: int | None, attempt: int | None) -> str | None:
    status = record.get("status")
    if status != "pending":
        return status or "missing"
    if cycle is not None and int(record.get("cycle", "0")) != cycle:
        return "stale"
    if attempt is not None and int(record.get("attempts", "0")) + 1 != attempt:
        return "stale"
    return None


async def _lease(ctx: WorkerContext, dlv_id: str) -> bool:
    token = secrets.token_hex(8)
    key = ctx.deliveries.key("lease", dlv_id)
    return bool(await ctx.redis.set(key, token, nx=True, px=lease_ttl_ms(ctx)))


async def _release(ctx: WorkerContext, dlv_id: str) -> None:
    await ctx.redis.delete(ctx.deliveries.key("lease", dlv_id))


async def attempt_delivery(
    ctx: WorkerContext,
    dlv_id: str,
    event: dict[str, Any],
    *,
    cycle: int | None = None,
    attempt: int | None = None,
) -> str:
    """Run the next attempt of delivery ``dlv_id`` if it is still due. Returns its new status."""
    record = await ctx.deliveries.get_delivery(dlv_id)
    skip = _skip_reason(record, cycle, attempt)
    if skip:
        return skip
    job = Job(
        dlv_id=dlv_id,
        event=event,
        target=json.loads(record["target"]),
        sub=None,
        cycle=int(record.get("cycle", "0")),
        attempt=int(record.get("attempts", "0")) + 1,
    )
    if record.get("sub"):
        sub = await ctx.deliveries.get_subscription(record["sub"])
        if sub is None or sub.get("status") != "active":
            why = "subscription deleted" if sub is None else "subscription disabled"
            return await _abandon(ctx, job, why)
        job = Job(job.dlv_id, event, job.target, sub, job.cycle, job.attempt)
    if not await _lease(ctx, dlv_id):
        # Someone is attempting it now, or died doing so: look again once the lease has expired.
        await ctx.deliveries.defer(dlv_id, job.cycle, job.attempt, ctx.clock() + lease_ttl_ms(ctx))
        return "leased"
    try:
        return await _admitted(ctx, job)
    finally:
        await _release(ctx, dlv_id)


async def _admitted(ctx: WorkerContext, job: Job) -> str:
    if job.sub is None:
        return await _record(ctx, job, await _send(ctx, job))
    s = ctx.settings
    rate = float(job.sub.get("rate_limit") or s.GATEWAY_SUBSCRIPTION_RATE)
    admission, slot = await ctx.deliveries.admit(
        job.sub["id"],
        rate=rate,
        burst=max(1, s.GATEWAY_SUBSCRIPTION_BURST),
        cap=s.GATEWAY_SUBSCRIPTION_CONCURRENCY,
        slot_ttl_ms=lease_ttl_ms(ctx),
        concurrency_wait_ms=CONCURRENCY_WAIT_MS,
        now=ctx.clock(),
    )
    if not admission.allowed:
        await ctx.deliveries.defer(job.dlv_id, job.cycle, job.attempt, ctx.clock() + admission.wait_ms)
        log.info(
            "delivery_deferred", delivery_id=job.dlv_id, reason=admission.reason, wait_ms=admission.wait_ms
        )
        return "deferred"
    result = await _send(ctx, job)
    state = await ctx.deliveries.settle(
        job.sub["id"],
        slot,
        ok=result.outcome is Outcome.SUCCESS,
        gone=result.outcome is Outcome.GONE,
        policy=breaker_policy(ctx),
        now=ctx.clock(),
    )
    if state == "disabled":
        await _operator_event(ctx, job.sub, gone=result.outcome is Outcome.GONE)
    return await _record(ctx, job, result)


# --- send ---------------------------------------------------------------------------------------


async def _send(ctx: WorkerContext, job: Job) -> Attempt:
    started = time.monotonic()
    if job.target.get("type") == "queue":
        result = await _enqueue(ctx, job)
    elif job.target.get("type") == relay.RELAY:
        result = await _send_relay(ctx, job)
    else:
        result = await _send_webhook(ctx, job)
    ms = round((time.monotonic() - started) * 1000, 1)
    return Attempt(result.outcome, result.status_code, result.error, result.retry_after, result.body, ms)


def signing_secrets(ctx: WorkerContext, sub: dict[str, str] | None) -> list[str]:
    if sub is None:
        return [ctx.webhook_secret]
    now = ctx.clock()
    held = json.loads(sub.get("secrets") or "[]")
    return [s["secret"] for s in held if not s.get("expires_at") or int(s["expires_at"]) > now]


def _open(
    ctx: WorkerContext, job: Job, url: str, body: bytes, headers: dict[str, str]
) -> AbstractAsyncContextManager[httpx.Response]:
    """POST the event as JSON; a per-request target that asked for GET (Plivo's
    ``callback_method=GET`` pattern) gets the same JSON, and signature, in the ``event`` query
    parameter."""
    if job.sub is None and job.target.get("method") == "GET":
        headers = {k: v for k, v in headers.items() if k != "content-type"}
        return ctx.http.stream("GET", url, params={"event": body.decode("utf-8")}, headers=headers)
    return ctx.http.stream("POST", url, content=body, headers=headers)


async def _send_webhook(ctx: WorkerContext, job: Job) -> Attempt:
    event = job.event
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "callback-gateway/0.1",
        "webhook-id": str(event["id"]),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(signing_secrets(ctx, job.sub), str(event["id"]), timestamp, body),
    }
    url = str(job.sub["url"] if job.sub else job.target["url"])
    parent = str(event.get("traceparent") or "")
    if not parent:
        return await _exchange(ctx, lambda: _open(ctx, job, url, body, headers))
    attributes = {"callback_gateway.event_id": str(event["id"]), "callback_gateway.delivery_id": job.dlv_id}
    fallback = tracing.child(parent)
    with tracing.span(
        ctx.settings, "webhook.deliver", parent, fallback=fallback, kind="client", attributes=attributes
    ) as span:
        headers["traceparent"] = span.traceparent
        attempt = await _exchange(ctx, lambda: _open(ctx, job, url, body, headers))
        span.set("callback_gateway.outcome", attempt.outcome.value)
        if attempt.status_code is not None:
            span.set("http.response.status_code", attempt.status_code)
        return attempt


async def _send_relay(ctx: WorkerContext, job: Job) -> Attempt:
    """A drop-in proxy client's callback: Plivo's form and V3 signature (workers.relay)."""
    if job.event.get("type") not in relay.RELAYED_TYPES:
        return Attempt(Outcome.SUCCESS, None, "", None, "not relayed: not a Plivo callback")
    req = relay.build(ctx.settings, job.target, job.event)
    return await _exchange(
        ctx, lambda: ctx.http.stream(req.method, req.url, content=req.content, headers=req.headers)
    )


async def _exchange(
    ctx: WorkerContext, opener: Callable[[], AbstractAsyncContextManager[httpx.Response]]
) -> Attempt:
    """One HTTP exchange under the attempt deadline, its answer read up to the size limit."""
    limit = ctx.settings.GATEWAY_MAX_RESPONSE_BYTES
    try:
        async with asyncio.timeout(ctx.settings.GATEWAY_DELIVERY_TIMEOUT):
            async with opener() as response:
                answer = await _drain(response, limit)
    except (TimeoutError, httpx.TimeoutException) as exc:
        return Attempt(Outcome.TIMEOUT, None, f"timeout: {type(exc).__name__}", None)
    except httpx.HTTPError as exc:
        return Attempt(Outcome.CONNECT_ERROR, None, f"{type(exc).__name__}: {exc}"[:200], None)
    outcome = classify_status(response.status_code)
    retry_after = None
    if response.status_code in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
    text = answer.decode("utf-8", errors="replace")
    return Attempt(outcome, response.status_code, "", retry_after, text)


async def _drain(response: httpx.Response, limit: int) -> bytes:
    """Read at most ``limit`` bytes of the answer; the rest is never read."""
    buf = bytearray()
    async for chunk in response.aiter_raw():
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit])


async def _enqueue(ctx: WorkerContext, job: Job) -> Attempt:
    # arq refuses a second job with the same id while the first (or its result) exists, so
    # reprocessing after a crash cannot enqueue the event twice; a retry/replay is a new cycle.
    job_id = f"cg:{job.dlv_id}" if job.cycle == 0 else f"cg:{job.dlv_id}:r{job.cycle}"
    target = job.target
    await ctx.arq.enqueue_job(target["function"], job.event, _job_id=job_id, _queue_name=target["queue"])
    return Attempt(Outcome.SUCCESS, None, "", None)


# --- record -------------------------------------------------------------------------------------


def _log_entry(job: Job, result: Attempt, at: int) -> dict[str, Any]:
    return {
        "attempt": job.attempt,
        "cycle": job.cycle,
        "at": iso_ms(at),
        "outcome": result.outcome.value,
        "status_code": result.status_code,
        "duration_ms": result.ms,
        "error": result.error,
        "response": result.body,
    }


def _schedule(ctx: WorkerContext, sub: dict[str, str] | None) -> list[float]:
    if sub and sub.get("retry_schedule"):
        schedule: list[float] = json.loads(sub["retry_schedule"])
        return schedule
    return list(ctx.settings.GATEWAY_RETRY_SCHEDULE)


async def _record(ctx: WorkerContext, job: Job, result: Attempt) -> str:
    now = ctx.clock()
    entry = _log_entry(job, result, now)
    common: dict[str, Any] = {"cycle": job.cycle, "attempts": job.attempt, "log_entry": entry, "now": now}
    if result.outcome is Outcome.SUCCESS:
        status = await ctx.deliveries.record(
            job.dlv_id, status="succeeded", code=result.status_code, error="", **common
        )
    else:
        delay = next_delay(
            job.attempt,
            result.outcome,
            _schedule(ctx, job.sub),
            retry_after=result.retry_after,
            overload_floor=ctx.settings.GATEWAY_OVERLOAD_FLOOR,
        )
        error = result.error or f"HTTP {result.status_code}"
        retry_at = None if delay is None else now + int(delay * 1000)
        status = await ctx.deliveries.record(
            job.dlv_id,
            status="failed" if delay is None else "pending",
            code=result.status_code,
            error=error,
            retry_at=retry_at,
            **common,
        )
    metrics.DELIVERY_ATTEMPTS.labels(result.outcome.value).inc()
    if result.outcome is Outcome.SUCCESS and job.cycle == 0:
        metrics.observe_first_success(job.event.get("created_at"), time.time())
    log.info(
        "delivery",
        event_id=job.event["id"],
        delivery_id=job.dlv_id,
        attempt=job.attempt,
        cycle=job.cycle,
        outcome=result.outcome.value,
        code=result.status_code,
        ms=result.ms,
        status=status,
    )
    return status


async def _abandon(ctx: WorkerContext, job: Job, why: str) -> str:
    """End a delivery whose subscription is gone or disabled (dead letter, no attempt made)."""
    return await ctx.deliveries.record(
        job.dlv_id,
        cycle=job.cycle,
        status="failed",
        attempts=job.attempt - 1,
        code=None,
        error=why,
        now=ctx.clock(),
    )


async def _operator_event(ctx: WorkerContext, sub: dict[str, str], *, gone: bool) -> None:
    """Announce a disabled subscription: an event, fanned out by its own (idempotent) job."""
    now = ctx.clock()
    reason = "endpoint answered 410 Gone" if gone else "failing for longer than GATEWAY_DISABLE_AFTER"
    event_id = "evt_" + hashlib.sha256(f"disabled|{sub['id']}|{now}".encode()).hexdigest()[:32]
    data = {"subscription_id": sub["id"], "url": sub["url"], "reason": reason, "disabled_at": iso_ms(now)}
    event = envelope(event_id, "subscription.disabled", now, None, {}, data)
    log.warning("subscription_disabled", subscription=sub["id"], reason=reason, event_id=event_id)
    await ctx.arq.enqueue_job(OPERATOR_EVENT_JOB, event, _job_id=event_id, _queue_name=ctx.queue_name)


# --- the arq job ----------------------------------------------------------------------------


async def deliver_job(
    ctx: dict[str, Any], dlv_id: str, cycle: int | None = None, attempt: int | None = None
) -> str:
    """arq job: attempt ``attempt`` of cycle ``cycle`` of a delivery (a retry, replay or deferral)."""
    wctx: WorkerContext = ctx["gw"]
    record = await wctx.deliveries.get_delivery(dlv_id)
    skip = _skip_reason(record, cycle, attempt)
    if skip:
        return skip
    event = await wctx.deliveries.get_event(record["event_id"])
    if event is None:
        return "expired"
    return await attempt_delivery(wctx, dlv_id, event, cycle=cycle, attempt=attempt)
