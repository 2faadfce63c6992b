"""Targets: their JSON (request records, delivery records) read and written back byte for byte."""

from __future__ import annotations

import hashlib
import json

import pytest

from gateway.api.models import QueueTarget as QueueBody
from gateway.api.models import WebhookTarget as WebhookBody
from gateway.domain.targets import (
    QueueTarget,
    RelayTarget,
    SubscriptionTarget,
    WebhookTarget,
    target_from_json,
    targets_from_json,
)
from workers.delivery import delivery_id


def _compact(value: object) -> str:
    # How the store writes a delivery's target (gateway.store.delivery._json).
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# Every shape written today: a request's webhook (the API model's dump, or a packed URL unpacked),
# a GET one, a queue, a proxy client's relay, a subscription's delivery.
STORED = [
    (
        '{"type":"webhook","url":"https://h.example/x?a=1","method":"POST"}',
        WebhookTarget("https://h.example/x?a=1"),
    ),
    (
        '{"type":"webhook","url":"https://h.example/é","method":"GET"}',
        WebhookTarget("https://h.example/é", "GET"),
    ),
    ('{"type":"queue","queue":"jobs","function":"on_result"}', QueueTarget("jobs", "on_result")),
    (
        '{"type":"plivo_relay","url":"https://c.example/cb","method":"GET","token_id":"0123456789abcdef"}',
        RelayTarget("https://c.example/cb", "GET", "0123456789abcdef"),
    ),
    (
        '{"type":"webhook","url":"https://s.example/hook","subscription":"sub_1"}',
        SubscriptionTarget("sub_1", "https://s.example/hook"),
    ),
]


@pytest.mark.parametrize(("stored", "target"), STORED)
def test_a_stored_target_reads_as_its_type_and_writes_back_the_same_bytes(
    stored: str, target: object
) -> None:
    parsed = target_from_json(json.loads(stored))
    assert parsed == target
    assert _compact(parsed.to_json()) == stored


def test_the_api_models_dump_what_the_domain_writes() -> None:
    # Request targets are stored as the API models dump them (gateway.api.routes.requests).
    webhook = WebhookBody(type="webhook", url="https://h.example/x", method="GET").model_dump()
    queue = QueueBody(type="queue", queue="jobs", function="on_result").model_dump()
    assert targets_from_json([webhook, queue]) == [
        WebhookTarget("https://h.example/x", "GET"),
        QueueTarget("jobs", "on_result"),
    ]
    assert [t.to_json() for t in targets_from_json([webhook, queue])] == [webhook, queue]
    assert list(target_from_json(webhook).to_json()) == list(webhook)  # the same key order


def test_keys_and_delivery_ids_are_unchanged() -> None:
    # One delivery per event and target key: the ids of deliveries stored before must not move.
    keys = {
        WebhookTarget("https://h/x", "GET"): "webhook:https://h/x",
        SubscriptionTarget("sub_1", "https://h/x"): "sub:sub_1",
        QueueTarget("q", "f"): "queue:q:f",
        RelayTarget("https://h/x"): "relay:https://h/x",
    }
    for target, key in keys.items():
        assert target.key == key
        digest = hashlib.sha256(f"evt_1|{key}".encode()).hexdigest()
        assert delivery_id("evt_1", target) == f"dlv_{digest[:24]}"


def test_a_webhook_target_without_a_method_posts() -> None:
    assert target_from_json({"type": "webhook", "url": "https://h/x"}) == WebhookTarget("https://h/x", "POST")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown target type"):
        target_from_json({"type": "carrier_pigeon", "url": "https://h/x"})
