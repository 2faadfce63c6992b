"""Delivering one event to one target, written as named phases.

begin (one script: is it still due? its subscription active? the lease, admission) -> send ->
finish (one script: breaker and auto-disable, the record, the retry job, the lease back, and for
the last delivery of an inbox entry its XACK + XDEL).

Two Redis round trips around each attempt, one less for a first attempt (``emit_and_begin`` runs
``begin`` inside the fan-out's own script): the worker's cost per delivery is Python CPU, and every
round trip is ~50 µs of it (docs/performance.md).

This module runs the phases; the attempt itself (the HTTP exchange, signing, what a reply means
and the record it makes) is ``workers.attempt``.

* A lease (``lease:{delivery_id}``, expiring after the attempt timeout plus a margin) keeps two
  workers from attempting the same delivery at once. Every attempt runs under one overall
  deadline (``GATEWAY_DELIVERY_TIMEOUT``, connect + send + read), shorter than the lease and than
  the arq job timeout, so a slow endpoint can never see a second concurrent attempt. The deadline
  starts once one of the worker's connections is free (``SLOT_WAIT_S`` at most, else the attempt
  is put off uncounted): slow endpoints holding them do not make healthy ones time out.
* Jobs carry (cycle, attempt). A job whose attempt already happened (a duplicate after a crash)
  does nothing; a job that finds the lease taken or is refused admission (subscription over its
  rate or concurrency, breaker open) re-queues the same attempt for later without counting it.
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
from collections.abc import Iterator

from arq import Retry
from redis.exceptions import RedisError

from gateway.domain.events import Event
from gateway.domain.outcomes import Ack, BeginState, DeliveryStatus
from gateway.domain.subscriptions import Subscription
from gateway.domain.targets import SubscriptionTarget, Target, target_from_json
from gateway.infra import logs, metrics, redis_errors
from gateway.infra.redis_client import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S
from gateway.services.netguard import NoSlot
from gateway.settings import Settings
from gateway.store.delivery import DELIVER_JOB, AttemptLimits, Begun, BreakerPolicy, encode_event
from workers.attempt import Attempt, Job, attempt_record, disable_reason, operator_job, queue_job, send
from workers.context import JobContext, WorkerContext
from workers.retry import Outcome

log = logs.get("workers.delivery")

__all__ = ["DELIVER_JOB", "attempt_limits", "deliver_job", "delivery_id", "run_begun"]

LEASE_MARGIN_S = 5.0
# How long an attempt may wait for one of the worker's connections before its deadline starts
# (gateway.services.netguard.WebhookClient): the wait and the attempt together stay inside the lease.
SLOT_WAIT_S = LEASE_MARGIN_S / 2
# A delivery refused for the subscription's concurrency cap tries again this much later.
CONCURRENCY_WAIT_MS = 250
CONCURRENCY_WAIT_MAX_MS = 2000


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
        result = await send(ctx, job)
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


# --- finish ---------------------------------------------------------------------------------------


async def _finish(ctx: WorkerContext, job: Job, begun: Begun, result: Attempt, ack: Ack | None) -> str:
    now = ctx.clock()
    status, state = await ctx.deliveries.finish(
        job.dlv_id,
        begun,
        attempt_record(ctx, job, result, now),
        sub=job.sub.id if job.sub else "",
        breaker=breaker_policy(ctx),
        ok=result.outcome is Outcome.SUCCESS,
        gone=result.outcome is Outcome.GONE,
        ack=ack,
        enqueue=queue_job(job) if result.outcome is Outcome.SUCCESS else None,
        on_disable=operator_job(ctx, job.sub, result, now),
        now=now,
    )
    if state == "disabled" and job.sub is not None:
        reason = disable_reason(result)
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
