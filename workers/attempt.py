"""One attempt of a delivery: the HTTP exchange and what its reply means.

``workers.delivery`` runs the phases (begin -> send -> finish); this module is the middle and
what ``finish`` is handed: ``send`` makes the attempt under the deadline and reads the reply as
an ``Attempt``, ``attempt_record`` turns it into the record (and the retry's time), and
``queue_job`` / ``operator_job`` are the jobs ``finish`` writes with it.

* Subscriptions sign with every secret they currently hold (two during a rotation); request
  targets sign with the gateway's ``GATEWAY_WEBHOOK_SECRET``. ``webhook-id`` is the event id on
  every attempt, so receivers can deduplicate.
* Queue targets become an arq job whose id derives from the delivery and its cycle: reprocessing
  never enqueues twice, an explicit retry/replay (a new cycle) does.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from arq.jobs import serialize_job

from gateway.domain.events import Event, iso_ms
from gateway.domain.outcomes import DeliveryStatus
from gateway.domain.signing import webhook_headers
from gateway.domain.subscriptions import Subscription
from gateway.domain.targets import QueueTarget, RelayTarget, SubscriptionTarget, Target, WebhookTarget
from gateway.infra import tracing
from gateway.services.netguard import ExchangeError
from gateway.store.delivery import OPERATOR_EVENT_JOB, AttemptLog, AttemptRecord
from workers import relay
from workers.context import WorkerContext
from workers.retry import Outcome, classify_status, next_delay, parse_retry_after

__all__ = ["Attempt", "Job", "attempt_record", "disable_reason", "operator_job", "queue_job", "send"]


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


# --- send ---------------------------------------------------------------------------------------


async def send(ctx: WorkerContext, job: Job) -> Attempt:
    """Make the attempt; raises ``NoSlot`` when none of the worker's connections came free."""
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


def _log_entry(job: Job, result: Attempt, at: int) -> AttemptLog:
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


def attempt_record(ctx: WorkerContext, job: Job, result: Attempt, now: int) -> AttemptRecord:
    """What ``finish`` records: the delivery's new status, its log entry, and when it is to be
    retried (``workers.retry.next_delay``; none left: failed)."""
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


def disable_reason(result: Attempt) -> str:
    if result.outcome is Outcome.GONE:
        return "endpoint answered 410 Gone"
    return "failing for longer than GATEWAY_DISABLE_AFTER"


def operator_job(
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
        "reason": disable_reason(result),
        "disabled_at": iso_ms(now),
    }
    event = Event.new(event_id, "subscription.disabled", now, None, {}, data)
    payload = serialize_job(OPERATOR_EVENT_JOB, (event.to_json(),), {}, None, now)
    return ctx.queue_name, event_id, payload
