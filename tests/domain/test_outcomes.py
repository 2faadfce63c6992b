"""The pipeline's named answers equal the strings the store's scripts return."""

from __future__ import annotations

import json

from gateway.domain.outcomes import Ack, BeginState, CorrelationOutcome, DeliveryStatus


def test_members_are_the_scripts_strings() -> None:
    assert [o.value for o in CorrelationOutcome] == [
        "parked", "matched", "replay", "extra", "late", "stale", "unmatched",
    ]  # fmt: skip
    assert CorrelationOutcome("late") is CorrelationOutcome.LATE
    assert BeginState.GO == "go" and "refused" in frozenset({BeginState.REFUSED})
    assert json.dumps({"status": DeliveryStatus.SUCCEEDED}) == '{"status": "succeeded"}'
    assert f"{DeliveryStatus.FAILED}" == "failed"


def test_an_ack_is_the_triple_the_store_takes() -> None:
    ack = Ack("cg:inbox", "workers", "1-0")
    inbox, group, entry_id = ack
    assert (inbox, group, entry_id) == ("cg:inbox", "workers", "1-0") == tuple(ack)
    assert ack.entry_id == "1-0"
