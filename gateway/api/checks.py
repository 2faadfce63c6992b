"""Checks several routes share: time filters, and whether a subscription can take a retry."""

from __future__ import annotations

import datetime as dt
import math

from gateway.api.state import GatewayState
from gateway.domain.errors import BadRequest
from gateway.store.delivery import DeliveryRecord

MAX_UNIX_S = 253402300799  # 9999-12-31T23:59:59Z


def time_ms(name: str, value: str | None) -> int | None:
    """A time filter: ISO 8601 (``2026-11-28T10:00:00Z``) or Unix seconds, as epoch ms."""
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or abs(seconds) > MAX_UNIX_S:
            raise BadRequest(f"{name}: Unix seconds out of range")
        return int(seconds * 1000)
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{name}: not an ISO 8601 time or Unix seconds") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


async def disabled_subscription(state: GatewayState, record: DeliveryRecord) -> str | None:
    """The id of the delivery's subscription if it is disabled (a retry would fail at once)."""
    sub_id = record.get("sub")
    if not sub_id:
        return None
    sub = await state.deliveries.get_subscription(sub_id)
    return sub_id if sub is not None and sub.status == "disabled" else None


def enable_first(sub_id: str) -> BadRequest:
    return BadRequest(
        f"subscription {sub_id} is disabled: enable it first (POST /v1/subscriptions/{sub_id}/enable)"
    )
