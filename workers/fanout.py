"""Fan-out: which deliveries an event gets, stored once, then attempted.

Every event goes to the targets of its request and to every active subscription whose
``event_types`` match (``*`` matches all but operator events). Subscriptions are found through
per-type index sets (``DeliveryStore.matching_subscriptions``: one round trip, no scan). The event
and its delivery records are written by one script (``DeliveryStore.emit``); calling this again for
the same event (after a crash, or a replayed inbox entry) finds them and only attempts the
deliveries that are still pending and not yet attempted (the others have their retry job).
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import logs
from workers.context import WorkerContext
from workers.delivery import attempt_delivery, delivery_id

log = logs.get("workers.fanout")


def deliveries_for(
    event: dict[str, Any],
    request_targets: list[dict[str, Any]],
    subscriptions: list[tuple[str, str]] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(delivery id, target) for the request's own targets and each matching subscription."""
    targets = list(request_targets)
    for sub_id, url in subscriptions or []:
        targets.append({"type": "webhook", "url": url, "subscription": sub_id})
    event_id = str(event["id"])
    out: dict[str, dict[str, Any]] = {}
    for target in targets:
        out.setdefault(delivery_id(event_id, target), target)  # the same target twice: once
    return list(out.items())


async def fan_out(
    ctx: WorkerContext,
    event: dict[str, Any],
    request_targets: list[dict[str, Any]],
    *,
    deliver: bool = True,
) -> None:
    """Store ``event`` and, when ``deliver``, its deliveries; attempt the new ones now."""
    deliveries: list[tuple[str, dict[str, Any]]] = []
    if deliver:
        subscriptions = await ctx.deliveries.matching_subscriptions(str(event.get("type") or ""))
        deliveries = deliveries_for(event, request_targets, subscriptions)
    _, states = await ctx.deliveries.emit(event, deliveries, now=ctx.clock())
    pending = [d for (d, _), s in zip(deliveries, states, strict=True) if s == "pending"]
    # attempt=1: a delivery whose first attempt already happened has its retry job; do not race it.
    results = await asyncio.gather(
        *(attempt_delivery(ctx, d, event, cycle=0, attempt=1) for d in pending), return_exceptions=True
    )
    for dlv_id, result in zip(pending, results, strict=True):
        if isinstance(result, BaseException):
            await _first_attempt_failed(ctx, dlv_id, result)


FIRST_ATTEMPT_RETRY_MS = 5000


async def _first_attempt_failed(ctx: WorkerContext, dlv_id: str, error: BaseException) -> None:
    """A first attempt that blew up (a bug, a Redis error mid-way) still leaves a job behind:
    without one the delivery would stay pending forever once the inbox entry is acknowledged."""
    if not isinstance(error, Exception):
        raise error  # cancellation and the like are not ours to swallow
    log.warning("first_attempt_error", delivery_id=dlv_id, error=type(error).__name__)
    await ctx.deliveries.defer(dlv_id, 0, 1, ctx.clock() + FIRST_ATTEMPT_RETRY_MS)


async def operator_event_job(ctx: dict[str, Any], event: dict[str, Any]) -> None:
    """arq job: fan out an operator event (``subscription.disabled``) to who subscribed to it."""
    wctx: WorkerContext = ctx["gw"]
    await fan_out(wctx, event, [])
