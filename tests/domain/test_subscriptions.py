"""A subscription's stored fields, parsed once: signing secrets and its own retry schedule."""

from __future__ import annotations

import json

from gateway.domain.subscriptions import SigningSecret, Subscription

NOW = 1_800_000_000_000


def test_a_delivery_signs_with_every_secret_not_yet_expired() -> None:
    held = [
        {"secret": "whsec_new", "expires_at": 0},
        {"secret": "whsec_old", "expires_at": NOW + 1},
        {"secret": "whsec_gone", "expires_at": NOW},
    ]
    sub = Subscription.for_delivery("sub_1", "https://h/x", json.dumps(held), "")
    assert sub.secrets[0] == SigningSecret("whsec_new", 0)
    assert sub.signing_secrets(NOW) == ["whsec_new", "whsec_old"]
    assert Subscription.for_delivery("sub_1", "https://h/x", "", "").signing_secrets(NOW) == []


def test_its_own_retry_schedule_or_none() -> None:
    assert Subscription.for_delivery("s", "u", "[]", "").retry_schedule is None  # the setting's
    assert Subscription.for_delivery("s", "u", "[]", "[0, 5, 30.5]").retry_schedule == (0, 5, 30.5)
    assert Subscription.for_delivery("s", "u", "[]", "[]").retry_schedule == ()  # its own: no retries


def test_a_stored_record() -> None:
    record = {
        "id": "sub_1",
        "url": "https://h/x",
        "event_types": '["call.status","*"]',
        "status": "disabled",
        "secrets": '[{"secret":"whsec_a","expires_at":0}]',
        "retry_schedule": "",
        "rate_limit": "2.5",
        "created_at": "1800000000000",
        "disabled_at": "1800000001000",
        "disabled_reason": "endpoint answered 410 Gone",
    }
    sub = Subscription.from_record(record)
    assert sub.event_types == ("call.status", "*")
    assert (sub.status, sub.rate_limit, sub.retry_schedule) == ("disabled", 2.5, None)
    assert (sub.created_at, sub.updated_at, sub.disabled_at) == (NOW, None, NOW + 1000)
    assert sub.description == "" and sub.disabled_reason == "endpoint answered 410 Gone"
