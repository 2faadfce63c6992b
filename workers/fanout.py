"""Fan-out: which deliveries an event gets, stored once, then attempted.

Every event goes to the targets of its request and to every active subscription whose
``event_types`` match (``*`` matches all but operator events). Subscriptions are found through
per-type index sets (``DeliveryStore.matching_subscriptions``: no scan; the consumer reads them in
the same round trip as the correlation). The event, its delivery records and the start of each
first attempt (lease, admission) are one script (``DeliveryStore.emit_and_begin``); calling this
again for the same event (after a crash, or a replayed inbox entry) finds them and only attempts
the deliveries that are still pending and not yet attempted (the others have their retry job).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from gateway.domain.events import Event, EventJson
from gateway.domain.outcomes import Ack, BeginState
from gateway.domain.targets import SubscriptionTarget, Target
from gateway.infra import logs
from gateway.store.delivery import encode_event
from workers.context import JobContext, WorkerContext
from workers.delivery import attempt_limits, delivery_id, redis_trouble_retried, run_begun

log = logs.get("workers.fanout")


async def _run_all(attempts: list[Coroutine[Any, Any, str]]) -> list[str | BaseException]:
    """``gather(..., return_exceptions=True)``, without its tasks for the usual single attempt."""
    if len(attempts) == 1:
        try:
            return [await attempts[0]]
        except Exception as exc:
            return [exc]
    return await asyncio.gather(*attempts, return_exceptions=True)


# The other answers of ``begin``: nothing is due.
ACTIONABLE = frozenset({BeginState.GO, BeginState.ABANDON, BeginState.LEASED, BeginState.REFUSED})


def deliveries_for(
    event: Event,
    request_targets: list[Target],
    subscriptions: list[tuple[str, str]] | None = None,
) -> list[tuple[str, Target]]:
    """(delivery id, target) for the request's own targets and each matching subscription."""
    targets = list(request_targets)
    for sub_id, url in subscriptions or []:
        targets.append(SubscriptionTarget(sub_id, url))
    out: dict[str, Target] = {}
    for target in targets:
        out.setdefault(delivery_id(event.id, target), target)  # the same target twice: once
    return list(out.items())


async def fan_out(
    ctx: WorkerContext,
    event: Event,
    request_targets: list[Target],
    *,
    deliver: bool = True,
    subscriptions: list[tuple[str, str]] | None = None,
    ack: Ack | None = None,
) -> bool:
    """Store ``event`` and, when ``deliver``, its deliveries; attempt the new ones now.

    ``subscriptions``: the matching ones when the caller already has them (read in the same round
    trip as the correlation). ``ack``: the inbox entry this event comes from; when exactly one
    attempt is made, its record and the entry's acknowledgement are one script. Returns True when
    the entry was acknowledged here."""
    deliveries: list[tuple[str, Target]] = []
    if deliver:
        if subscriptions is None:
            subscriptions = await ctx.deliveries.matching_subscriptions(event.type)
        deliveries = deliveries_for(event, request_targets, subscriptions)
    # Encoded once: what the store writes and every webhook of this event sends.
    event_json = encode_event(event.to_json())
    _, _, begun = await ctx.deliveries.emit_and_begin(
        event,
        deliveries,
        attempt_limits(ctx),
        now=ctx.clock(),
        event_json=event_json,
    )
    attempts = [
        (dlv_id, b) for (dlv_id, _), b in zip(deliveries, begun, strict=True) if b.state in ACTIONABLE
    ]
    going = [b for _, b in attempts if b.state == BeginState.GO]
    one_ack = ack if len(going) == 1 and len(attempts) == 1 else None
    results = await _run_all(
        [run_begun(ctx, dlv_id, event, b, ack=one_ack, event_json=event_json) for dlv_id, b in attempts]
    )
    acked = one_ack is not None
    for (dlv_id, _), result in zip(attempts, results, strict=True):
        if isinstance(result, BaseException):
            acked = False
            await _first_attempt_failed(ctx, dlv_id, result)
    return acked


FIRST_ATTEMPT_RETRY_MS = 5000


async def _first_attempt_failed(ctx: WorkerContext, dlv_id: str, error: BaseException) -> None:
    """A first attempt that blew up (a bug, a Redis error mid-way) still leaves a job behind:
    without one the delivery would stay pending forever once the inbox entry is acknowledged."""
    if not isinstance(error, Exception):
        raise error  # cancellation and the like are not ours to swallow
    log.warning("first_attempt_error", delivery_id=dlv_id, error=type(error).__name__)
    now = ctx.clock()
    await ctx.deliveries.defer(dlv_id, 0, 1, now + FIRST_ATTEMPT_RETRY_MS, now=now)


async def operator_event_job(ctx: JobContext, event: EventJson) -> None:
    """arq job: fan out an operator event (``subscription.disabled``, its JSON object) to who
    subscribed to it."""
    wctx: WorkerContext = ctx["gw"]
    with redis_trouble_retried(ctx, event_id=str(event.get("id"))):
        await fan_out(wctx, Event.from_json(event), [])
