"""The retry policy (workers.retry): schedule with jitter, Retry-After clamped, the overload floor."""

from __future__ import annotations

import random

from workers.retry import Outcome, classify_status, next_delay

SCHEDULE = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]


def test_retry_schedule_with_jitter_and_exhaustion() -> None:
    rng = random.Random(7)
    for attempt in range(1, len(SCHEDULE)):
        delay = next_delay(attempt, Outcome.HTTP_ERROR, SCHEDULE, rng=rng)
        assert delay is not None
        assert SCHEDULE[attempt] * 0.8 <= delay <= SCHEDULE[attempt] * 1.2
    assert next_delay(len(SCHEDULE), Outcome.HTTP_ERROR, SCHEDULE) is None
    assert next_delay(1, Outcome.SUCCESS, SCHEDULE) is None
    assert next_delay(1, Outcome.GONE, SCHEDULE) is None


def test_retry_after_is_clamped_and_overload_has_a_floor() -> None:
    assert next_delay(2, Outcome.RATE_LIMITED, SCHEDULE, retry_after=1) == 300  # raised to base
    assert next_delay(2, Outcome.RATE_LIMITED, SCHEDULE, retry_after=10**6) == 600  # 2 * base
    assert next_delay(2, Outcome.RATE_LIMITED, SCHEDULE, retry_after=450) == 450
    timeout = next_delay(1, Outcome.TIMEOUT, SCHEDULE, overload_floor=60)
    assert timeout == 60  # base 5 s, but a timed-out endpoint gets at least the floor
    plain = next_delay(1, Outcome.CONNECT_ERROR, SCHEDULE, overload_floor=60, rng=random.Random(1))
    assert plain is not None and plain < 60


def test_status_classification() -> None:
    assert classify_status(204) is Outcome.SUCCESS
    assert classify_status(301) is Outcome.HTTP_ERROR  # redirects are failures, never followed
    assert classify_status(410) is Outcome.GONE
    assert classify_status(429) is Outcome.RATE_LIMITED
    assert classify_status(503) is Outcome.HTTP_ERROR
