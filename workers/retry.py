"""Retry policy for webhook deliveries: one pure function, no I/O, no clock.

``next_delay`` answers: after attempt number ``attempt`` (1-based) failed with ``outcome``, how long
until the next one, or None when the schedule is exhausted (the delivery is dead-lettered).

* The schedule lists the delay before each attempt (the first entry, normally 0, is the delay
  before attempt 1), as Standard Webhooks recommends: 0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
  20 h, 24 h.
* Jitter of ±20 % spreads retries of many deliveries that failed together.
* After a timeout or a 429 the delay is at least ``overload_floor`` (the endpoint is struggling).
* A ``Retry-After`` is honoured but clamped to [base, 2 * base] so that an endpoint can neither make
  us hammer it nor park a delivery forever.
* 2xx is success; everything else, 3xx included (redirects are never followed), is a failure;
  ``410 Gone`` ends the delivery at once (the caller disables the subscription).

The schedule is the subscription's own ``retry_schedule`` when it has one, else
``GATEWAY_RETRY_SCHEDULE``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from enum import Enum


class Outcome(Enum):
    SUCCESS = "success"
    HTTP_ERROR = "http_error"  # a non-2xx answer other than the ones below
    RATE_LIMITED = "rate_limited"  # 429
    TIMEOUT = "timeout"
    CONNECT_ERROR = "connect_error"
    GONE = "gone"  # 410: the subscriber asks us to stop


def classify_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 410:
        return Outcome.GONE
    return Outcome.HTTP_ERROR


def next_delay(
    attempt: int,
    outcome: Outcome,
    schedule: Sequence[float],
    *,
    retry_after: float | None = None,
    overload_floor: float = 60.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> float | None:
    if outcome in (Outcome.SUCCESS, Outcome.GONE) or attempt >= len(schedule):
        return None
    base = float(schedule[attempt])
    if retry_after is not None:
        delay = min(max(retry_after, base), 2 * base) if base > 0 else max(retry_after, 0.0)
    else:
        rand = (rng or random).uniform(-jitter, jitter)
        delay = base * (1 + rand)
    if outcome in (Outcome.TIMEOUT, Outcome.RATE_LIMITED):
        delay = max(delay, overload_floor)
    return max(0.0, delay)


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now_s)
