"""Fan-out: which deliveries an event gets, stored once, then attempted.

Every event goes to the targets of its request. The event and its delivery records are written by
one script (``DeliveryStore.emit``); calling this again for the same event (after a crash, or a
replayed inbox entry) finds them and only attempts the deliveries that are still pending.
"""

from __future__ import annotations

import asyncio
from typing import Any

from workers.context import WorkerContext
from workers.delivery import attempt_delivery, delivery_id


def deliveries_for(
    event: dict[str, Any], request_targets: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    return [(delivery_id(str(event["id"]), t), t) for t in request_targets]


async def fan_out(
    ctx: WorkerContext,
    event: dict[str, Any],
    request_targets: list[dict[str, Any]],
    *,
    deliver: bool = True,
) -> None:
    """Store ``event`` and, when ``deliver``, its deliveries; attempt the pending ones now."""
    deliveries = deliveries_for(event, request_targets) if deliver else []
    _, states = await ctx.deliveries.emit(event, deliveries)
    pending = [d for (d, _), s in zip(deliveries, states, strict=True) if s == "pending"]
    await asyncio.gather(*(attempt_delivery(ctx, d, event) for d in pending))
