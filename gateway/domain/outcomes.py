"""The named answers of the pipeline: a correlation's outcome, ``begin``'s state, a delivery's status,
and which inbox entry a delivery acknowledges.

The store's scripts return these as strings (they are Redis values); the members are ``StrEnum``s,
equal to those strings, so callers compare a store's answer with a member directly.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class CorrelationOutcome(StrEnum):
    """What correlating a callback found (``Store.correlate``)."""

    PARKED = "parked"  # no request yet: kept until it arrives or the grace period ends
    MATCHED = "matched"  # the request's result
    REPLAY = "replay"  # the same callback again (its event already exists)
    EXTRA = "extra"  # a further callback for a request already completed (status updates)
    LATE = "late"  # the result of a request that had timed out
    STALE = "stale"  # an older status than the one recorded: stored, not fanned out
    UNMATCHED = "unmatched"  # no request within the grace period


class BeginState(StrEnum):
    """``begin``'s answer for one attempt (``DeliveryStore.begin``); a delivery that is not due
    answers its status (``DeliveryStatus``) instead, or ``missing`` / ``stale``."""

    GO = "go"  # the lease (and a subscription's admission) are held: attempt now
    ABANDON = "abandon"  # its subscription is gone or disabled
    LEASED = "leased"  # someone else is attempting it
    REFUSED = "refused"  # admission refused (rate, concurrency, breaker): ask again later
    EXPIRED = "expired"  # its event is gone
    MISSING = "missing"  # no such delivery
    STALE = "stale"  # the job's cycle or attempt is not the delivery's next one


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Ack(NamedTuple):
    """The inbox entry a delivery's record acknowledges (XACK + XDEL) in the same script.

    A NamedTuple, not a dataclass: the store takes the (inbox, group, entry id) triple as it is."""

    inbox: str
    group: str
    entry_id: str
