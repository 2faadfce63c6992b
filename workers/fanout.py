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

from workers.context import WorkerContext
from workers.delivery import attempt_delivery, delivery_id


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
    await asyncio.gather(*(attempt_delivery(ctx, d, event, cycle=0, attempt=1) for d in pending))


async def operator_event_job(ctx: dict[str, Any], event: dict[str, Any]) -> None:
    """arq job: fan out an operator event (``subscription.disabled``) to who subscribed to it."""
    wctx: WorkerContext = ctx["gw"]
    await fan_out(wctx, event, [])
