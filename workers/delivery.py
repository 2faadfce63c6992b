"""Delivering one event to one target, written as named phases.

begin (one script: is it still due? its subscription active? the lease, admission) -> send ->
finish (one script: breaker and auto-disable, the record, the retry job, the lease back, and for
the last delivery of an inbox entry its XACK + XDEL).

Two Redis round trips around each attempt, one less for a first attempt (``emit_and_begin`` runs
``begin`` inside the fan-out's own script): the worker's cost per delivery is Python CPU, and every
round trip is ~50 µs of it (docs/performance.md).

* A lease (``lease:{delivery_id}``, expiring after the attempt timeout plus a margin) keeps two
  workers from attempting the same delivery at once. Every attempt runs under one overall
  deadline (``GATEWAY_DELIVERY_TIMEOUT``, connect + send + read), shorter than the lease and than
  the arq job timeout, so a slow endpoint can never see a second concurrent attempt. The deadline
  starts once one of the worker's connections is free (``SLOT_WAIT_S`` at most, else the attempt
  is put off uncounted): slow endpoints holding them do not make healthy ones time out.
* Jobs carry (cycle, attempt). A job whose attempt already happened (a duplicate after a crash)
  does nothing; a job that finds the lease taken or is refused admission (subscription over its
  rate or concurrency, breaker open) re-queues the same attempt for later without counting it.
* Subscriptions sign with every secret they currently hold (two during a rotation); request
  targets sign with the gateway's ``GATEWAY_WEBHOOK_SECRET``. ``webhook-id`` is the event id on
  every attempt, so receivers can deduplicate.
* Queue targets become an arq job whose id derives from the delivery and its cycle: reprocessing
  never enqueues twice, an explicit retry/replay (a new cycle) does.
* A job that meets a transient Redis error (a dropped connection, a timeout, a failover) is run
  again later by arq (``redis_trouble_retried``) instead of being dropped: arq forgets a job that
  raised, and its delivery would stay pending with nothing scheduled. (arq still drops a job after
  ``JOB_MAX_TRIES``, a day of such errors, or one that outlives ``job_timeout``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from arq import Retry
from arq.jobs import serialize_job
from redis.exceptions import RedisError

from gateway.domain.events import Event, iso_ms
from gateway.domain.outcomes import Ack, BeginState, DeliveryStatus
from gateway.domain.signing import webhook_headers
from gateway.domain.subscriptions import Subscription
from gateway.domain.targets import (
    QueueTarget,
    RelayTarget,
    SubscriptionTarget,
    Target,
    WebhookTarget,
    target_from_json,
)
from gateway.infra import logs, metrics, redis_errors, tracing
from gateway.infra.redis_client import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S
from gateway.services.netguard import ExchangeError, NoSlot
from gateway.settings import Settings
from gateway.store.delivery import (
    DELIVER_JOB,
    OPERATOR_EVENT_JOB,
    AttemptLimits,
    AttemptRecord,
    Begun,
    BreakerPolicy,
    encode_event,
)
from workers import relay
from workers.context import JobContext, WorkerContext
from workers.retry import Outcome, classify_status, next_delay, parse_retry_after

log = logs.get("workers.delivery")

__all__ = ["DELIVER_JOB", "attempt_limits", "deliver_job", "delivery_id", "run_begun"]

LEASE_MARGIN_S = 5.0
# How long an attempt may wait for one of the worker's connections before its deadline starts
# (gateway.services.netguard.WebhookClient): the wait and the attempt together stay inside the lease.
SLOT_WAIT_S = LEASE_MARGIN_S / 2
# A delivery refused for the subscription's concurrency cap tries again this much later.
CONCURRENCY_WAIT_MS = 250
CONCURRENCY_WAIT_MAX_MS = 2000


@dataclass(slots=True)  # not frozen: built per delivery, and frozen dataclasses are slow to build
class Attempt:
    outcome: Outcome
    status_code: int | None
    error: str
    retry_after: float | None
    body: str = ""
    ms: float = 0.0


@dataclass(slots=True)
class Job:
    dlv_id: str
    event: Event
    target: Target
    sub: Subscription | None
    cycle: int
    attempt: int
    body: bytes  # the event as JSON (encode_event): the webhook body and what is signed


def delivery_id(event_id: str, target: Target) -> str:
    digest = hashlib.sha256(f"{event_id}|{target.key}".encode()).hexdigest()
    return f"dlv_{digest[:24]}"


def lease_ttl_ms(ctx: WorkerContext) -> int:
    return int((ctx.settings.GATEWAY_DELIVERY_TIMEOUT + LEASE_MARGIN_S) * 1000)


def job_timeout(settings: Settings) -> float:
    """arq's timeout for a delivery job: always longer than one attempt and its lease, and than the
    worst a job can take (waiting for a connection, ``begin`` and ``finish`` each up to a reconnect
    and Redis's reply timeout, the attempt): arq drops a job it timed out, like one that raised."""
    redis_call = REDIS_CONNECT_TIMEOUT_S + REDIS_SOCKET_TIMEOUT_S
    worst = SLOT_WAIT_S + 2 * redis_call + settings.GATEWAY_DELIVERY_TIMEOUT
    return max(settings.GATEWAY_DELIVERY_TIMEOUT * 3, worst + LEASE_MARGIN_S)


def breaker_policy(ctx: WorkerContext) -> BreakerPolicy:
    if ctx.breaker is None:
        ctx.breaker = _breaker_policy(ctx)
    return ctx.breaker


def _breaker_policy(ctx: WorkerContext) -> BreakerPolicy:
    s = ctx.settings
    return BreakerPolicy(
        window_ms=int(s.GATEWAY_BREAKER_WINDOW * 1000),
        min_requests=s.GATEWAY_BREAKER_MIN_REQUESTS,
        failure_rate=s.GATEWAY_BREAKER_FAILURE_RATE,
        cooldown_ms=int(s.GATEWAY_BREAKER_COOLDOWN * 1000),
        disable_after_ms=int(s.GATEWAY_DISABLE_AFTER * 1000),
    )


# --- begin --------------------------------------------------------------------------------------


def attempt_limits(ctx: WorkerContext) -> AttemptLimits:
    if ctx.limits is None:  # settings do not change while a worker runs: build these once
        ctx.limits = _attempt_limits(ctx)
    return ctx.limits


def _attempt_limits(ctx: WorkerContext) -> AttemptLimits:
    s = ctx.settings
    return AttemptLimits(
        lease_ttl_ms=lease_ttl_ms(ctx),
        rate=float(s.GATEWAY_SUBSCRIPTION_RATE),
        burst=max(1, s.GATEWAY_SUBSCRIPTION_BURST),
        cap=s.GATEWAY_SUBSCRIPTION_CONCURRENCY,
        concurrency_wait_ms=CONCURRENCY_WAIT_MS,
    )


def refused_wait_ms(ctx: WorkerContext, begun: Begun) -> int:
    """When to ask again after a refused admission. The rate limit and the breaker say when
    (``wait_ms``); a full concurrency cap does not: the wait doubles with each deferral of the
    delivery (jittered, up to 2 s), so a backlog behind a slow endpoint does not turn into a storm
    of jobs asking every 250 ms, while one behind a fast but capped endpoint waits little."""
    if begun.reason != "concurrency":
        return begun.wait_ms
    backoff = CONCURRENCY_WAIT_MS * 2 ** min(begun.deferrals, 16)
    return int(min(backoff, CONCURRENCY_WAIT_MAX_MS, lease_ttl_ms(ctx)) * random.uniform(0.8, 1.2))


async def run_begun(
    ctx: WorkerContext,
    dlv_id: str,
    event: Event | None,
    begun: Begun,
    *,
    ack: Ack | None = None,
    event_json: str | None = None,
) -> str:
    """Go on from ``begin``'s answer: attempt, abandon, put off, or nothing. ``ack`` is
    acknowledged together with the record, and only when an attempt was made. ``event``: None when
    ``begin`` read it (``begun.event``); ``event_json``: ``event`` already encoded (``encode_event``)."""
    if begun.state == BeginState.GO:
        return await _go(ctx, dlv_id, event, begun, ack, event_json)
    if begun.state == BeginState.ABANDON:
        return await _abandon(ctx, dlv_id, begun)
    if begun.state == BeginState.LEASED:
        # Someone is attempting it now, or died doing so: look again once the lease has expired.
        await _after_lease(ctx, dlv_id, begun)
        return BeginState.LEASED.value
    if begun.state == BeginState.REFUSED:
        wait_ms = refused_wait_ms(ctx, begun)
        now = ctx.clock()
        await ctx.deliveries.defer(dlv_id, begun.cycle, begun.attempts + 1, now + wait_ms, now=now)
        log.info("delivery_deferred", delivery_id=dlv_id, reason=begun.reason, wait_ms=wait_ms)
        return "deferred"
    if begun.state == BeginState.EXPIRED:
        # Its event is gone while the delivery was still pending (cannot happen while retries keep
        # it alive; a safety net): a dead letter that says why, never a silent loss.
        expired = Begun(
            BeginState.ABANDON, begun.cycle, begun.attempts, reason="event expired before delivery"
        )
        return await _abandon(ctx, dlv_id, expired)
    return begun.state  # not due: its status, missing or stale


async def _go(
    ctx: WorkerContext,
    dlv_id: str,
    event: Event | None,
    begun: Begun,
    ack: Ack | None,
    event_json: str | None,
) -> str:
    """Attempt now: ``begin`` holds the lease (and the subscription's admission)."""
    if event is None:
        event_json = begun.event
        event = Event.from_json(json.loads(event_json))
    target = target_from_json(json.loads(begun.target))
    sub = None
    if isinstance(target, SubscriptionTarget):
        sub = Subscription.for_delivery(target.subscription, begun.url, begun.secrets, begun.retry_schedule)
    body = (event_json or encode_event(event.to_json())).encode("utf-8")
    job = Job(dlv_id, event, target, sub, begun.cycle, begun.attempts + 1, body)
    try:
        result = await _send(ctx, job)
    except NoSlot:
        # Not attempted: every connection of this worker stayed busy (slow endpoints
        # elsewhere). Nothing is counted against the endpoint; the same attempt runs again
        # once the lease ``begin`` took has expired. The inbox entry this attempt was to
        # acknowledge with its record is acknowledged now: its work is scheduled.
        await _after_lease(ctx, dlv_id, begun)
        if ack is not None:
            await ctx.deliveries.ack_entry(*ack)
        log.info("delivery_deferred", delivery_id=dlv_id, reason="worker_busy", wait_ms=lease_ttl_ms(ctx))
        return "deferred"
    return await _finish(ctx, job, begun, result, ack)


async def _after_lease(ctx: WorkerContext, dlv_id: str, begun: Begun) -> None:
    """Put the same attempt off until a lease taken now would have expired (not counted)."""
    now = ctx.clock()
    await ctx.deliveries.defer(dlv_id, begun.cycle, begun.attempts + 1, now + lease_ttl_ms(ctx), now=now)


# --- send ---------------------------------------------------------------------------------------


async def _send(ctx: WorkerContext, job: Job) -> Attempt:
    started = time.monotonic()
    target = job.target
    if isinstance(target, QueueTarget):
        # Written by ``finish`` itself, with the record (see queue_job).
        return Attempt(Outcome.SUCCESS, None, "", None)
    if isinstance(target, RelayTarget):
        result = await _send_relay(ctx, job, target)
    else:
        result = await _send_webhook(ctx, job, target)
    result.ms = round((time.monotonic() - started) * 1000, 1)
    return result


def signing_secrets(ctx: WorkerContext, sub: Subscription | None) -> list[str]:
    if sub is None:
        return [ctx.webhook_secret]
    return sub.signing_secrets(ctx.clock())


async def _send_webhook(ctx: WorkerContext, job: Job, target: WebhookTarget | SubscriptionTarget) -> Attempt:
    event, body = job.event, job.body
    headers = webhook_headers(signing_secrets(ctx, job.sub), event.id, body, int(time.time()))
    url = job.sub.url if job.sub else target.url
    method: str = "POST"
    content: bytes | None = body
    if isinstance(target, WebhookTarget) and target.method == "GET":
        # A per-request target that asked for GET (Plivo's ``callback_method=GET`` pattern) gets
        # the same JSON, and signature, in the ``event`` query parameter.
        del headers["content-type"]
        query = urlencode({"event": body.decode("utf-8")})
        url, method, content = f"{url}{'&' if '?' in url else '?'}{query}", "GET", None
    parent = event.traceparent or ""
    if not parent:
        return await _exchange(ctx, method, url, content, headers)
    attributes = {"callback_gateway.event_id": event.id, "callback_gateway.delivery_id": job.dlv_id}
    fallback = tracing.child(parent)
    with tracing.span(
        ctx.settings, "webhook.deliver", parent, fallback=fallback, kind="client", attributes=attributes
    ) as span:
        headers["traceparent"] = span.traceparent
        attempt = await _exchange(ctx, method, url, content, headers)
        span.set("callback_gateway.outcome", attempt.outcome.value)
        if attempt.status_code is not None:
            span.set("http.response.status_code", attempt.status_code)
        return attempt


async def _send_relay(ctx: WorkerContext, job: Job, target: RelayTarget) -> Attempt:
    """A drop-in proxy client's callback: Plivo's form and V3 signature (workers.relay)."""
    if job.event.type not in relay.RELAYED_TYPES:
        return Attempt(Outcome.SUCCESS, None, "", None, "not relayed: not a Plivo callback")
    req = relay.build(ctx.settings, target, job.event.data)
    # The URL is sent exactly as signed.
    return await _exchange(ctx, req.method, req.url, req.content, req.headers, encoded=True)


async def _exchange(
    ctx: WorkerContext,
    method: str,
    url: str,
    content: bytes | None,
    headers: dict[str, str],
    *,
    encoded: bool = False,
) -> Attempt:
    """One HTTP exchange under the attempt deadline, its answer read up to the size limit."""
    try:
        answer = await ctx.http.request(
            method,
            url,
            body=content,
            headers=headers,
            limit=ctx.settings.GATEWAY_MAX_RESPONSE_BYTES,
            encoded=encoded,
        )
    except ExchangeError as exc:
        if exc.timeout:
            return Attempt(Outcome.TIMEOUT, None, str(exc), None)
        return Attempt(Outcome.CONNECT_ERROR, None, str(exc), None)
    outcome = classify_status(answer.status)
    retry_after = None
    if answer.status in (429, 503):
        retry_after = parse_retry_after(answer.retry_after, time.time())
    text = answer.body.decode("utf-8", errors="replace")
    return Attempt(outcome, answer.status, "", retry_after, text)


def queue_job(job: Job) -> tuple[str, str, bytes] | None:
    """A queue target's arq job: (queue, job id, payload in arq's format), or None for others.

    Its id derives from the delivery and its cycle, and ``finish`` skips a job whose id (or result)
    arq already has, as ``enqueue_job`` does: reprocessing after a crash cannot enqueue the event
    twice; a retry/replay is a new cycle. Written in the same script as the record, it costs no
    round trip of its own (``enqueue_job`` is a WATCH/MULTI of four)."""
    target = job.target
    if not isinstance(target, QueueTarget):
        return None
    job_id = f"cg:{job.dlv_id}" if job.cycle == 0 else f"cg:{job.dlv_id}:r{job.cycle}"
    payload = serialize_job(target.function, (job.event.to_json(),), {}, None, int(time.time() * 1000))
    return target.queue, job_id, payload


# --- record -------------------------------------------------------------------------------------


def _log_entry(job: Job, result: Attempt, at: int) -> dict[str, str | int | float | None]:
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


def _schedule(ctx: WorkerContext, sub: Subscription | None) -> Sequence[float]:
    if sub is not None and sub.retry_schedule is not None:
        return sub.retry_schedule
    return ctx.settings.GATEWAY_RETRY_SCHEDULE


def _attempt_record(ctx: WorkerContext, job: Job, result: Attempt, now: int) -> AttemptRecord:
    entry = _log_entry(job, result, now)
    if result.outcome is Outcome.SUCCESS:
        return AttemptRecord(DeliveryStatus.SUCCEEDED, job.attempt, result.status_code, "", entry)
    delay = next_delay(
        job.attempt,
        result.outcome,
        _schedule(ctx, job.sub),
        retry_after=result.retry_after,
        overload_floor=ctx.settings.GATEWAY_OVERLOAD_FLOOR,
    )
    error = result.error or f"HTTP {result.status_code}"
    if delay is None:
        return AttemptRecord(DeliveryStatus.FAILED, job.attempt, result.status_code, error, entry)
    return AttemptRecord(
        DeliveryStatus.PENDING, job.attempt, result.status_code, error, entry, now + int(delay * 1000)
    )


async def _finish(ctx: WorkerContext, job: Job, begun: Begun, result: Attempt, ack: Ack | None) -> str:
    now = ctx.clock()
    status, state = await ctx.deliveries.finish(
        job.dlv_id,
        begun,
        _attempt_record(ctx, job, result, now),
        sub=job.sub.id if job.sub else "",
        breaker=breaker_policy(ctx),
        ok=result.outcome is Outcome.SUCCESS,
        gone=result.outcome is Outcome.GONE,
        ack=ack,
        enqueue=queue_job(job) if result.outcome is Outcome.SUCCESS else None,
        on_disable=_operator_job(ctx, job.sub, result, now),
        now=now,
    )
    if state == "disabled" and job.sub is not None:
        reason = _disable_reason(result)
        log.warning("subscription_disabled", subscription=job.sub.id, reason=reason)
    metrics.child(metrics.DELIVERY_ATTEMPTS, result.outcome.value).inc()
    if result.outcome is Outcome.SUCCESS and job.cycle == 0:
        metrics.observe_first_success(job.event.created_at, time.time())
    log.info(
        "delivery",
        event_id=job.event.id,
        delivery_id=job.dlv_id,
        attempt=job.attempt,
        cycle=job.cycle,
        outcome=result.outcome.value,
        code=result.status_code,
        ms=result.ms,
        status=status,
    )
    return status


async def _abandon(ctx: WorkerContext, dlv_id: str, begun: Begun) -> str:
    """End a delivery whose subscription is gone or disabled (dead letter, no attempt made)."""
    return await ctx.deliveries.record(
        dlv_id,
        cycle=begun.cycle,
        status=DeliveryStatus.FAILED,
        attempts=begun.attempts,
        code=None,
        error=begun.reason,
        now=ctx.clock(),
    )


def _disable_reason(result: Attempt) -> str:
    if result.outcome is Outcome.GONE:
        return "endpoint answered 410 Gone"
    return "failing for longer than GATEWAY_DISABLE_AFTER"


def _operator_job(
    ctx: WorkerContext, sub: Subscription | None, result: Attempt, now: int
) -> tuple[str, str, bytes] | None:
    """The job announcing a disabled subscription (``subscription.disabled``, fanned out by its own
    idempotent job), for ``finish`` to write if this failed attempt disables the subscription."""
    if sub is None or result.outcome is Outcome.SUCCESS:
        return None
    event_id = "evt_" + hashlib.sha256(f"disabled|{sub.id}|{now}".encode()).hexdigest()[:32]
    data = {
        "subscription_id": sub.id,
        "url": sub.url,
        "reason": _disable_reason(result),
        "disabled_at": iso_ms(now),
    }
    event = Event.new(event_id, "subscription.disabled", now, None, {}, data)
    payload = serialize_job(OPERATOR_EVENT_JOB, (event.to_json(),), {}, None, now)
    return ctx.queue_name, event_id, payload


# --- the arq job ----------------------------------------------------------------------------


JOB_RETRY_FIRST_S = 1.0  # a job that met Redis trouble runs again after 1 s, 2 s, 4 s... (jittered)
JOB_RETRY_MAX_S = 60.0
# arq drops a job after this many tries: at one a minute, about the day an arq job lives anyway
# (its key expires a day after its run time, ARQ_JOB_TTL_MS).
JOB_MAX_TRIES = 24 * 60


@contextlib.contextmanager
def redis_trouble_retried(job_ctx: JobContext, **where: str) -> Iterator[None]:
    """Turn a transient Redis error inside an arq job into arq's ``Retry``: the same job (same id,
    same arguments) runs again later, backing off. arq finishes a job that raised anything else
    and, keeping no results, forgets it. Every step of a job is idempotent (``begin`` checks the
    cycle, attempt and lease; ``emit`` is once per event id), so running it again after a script
    that ran but whose reply was lost does no harm: at worst an attempt whose ``finish`` was lost
    is made again once its lease expired, with the same ``webhook-id``. An error that would recur
    every time (not ``redis_errors.transient``) still fails the job, logged by arq."""
    try:
        yield
    except (RedisError, OSError) as exc:
        if not redis_errors.transient(exc):
            raise
        job_try = int(job_ctx.get("job_try") or 1)
        delay = min(JOB_RETRY_FIRST_S * 2 ** min(job_try - 1, 16), JOB_RETRY_MAX_S) * random.uniform(0.8, 1.2)
        error = type(exc).__name__
        log.warning("job_retry_later", error=error, job_try=job_try, wait_s=round(delay, 2), **where)
        raise Retry(defer=delay) from exc


async def deliver_job(
    ctx: JobContext, dlv_id: str, cycle: int | None = None, attempt: int | None = None
) -> str:
    """arq job: attempt ``attempt`` of cycle ``cycle`` of a delivery (a retry, replay or deferral)."""
    wctx: WorkerContext = ctx["gw"]
    with redis_trouble_retried(ctx, delivery_id=dlv_id):
        limits = attempt_limits(wctx)
        begun = await wctx.deliveries.begin(dlv_id, cycle, attempt, limits, now=wctx.clock(), with_event=True)
        # The event, read by ``begin``, is decoded only for an attempt (``_go``).
        return await run_begun(wctx, dlv_id, None, begun)
