"""The event envelope: built, stored, read back and sent byte for byte as before."""

from __future__ import annotations

import json

from gateway.domain.events import Event, iso_ms
from gateway.store.delivery import encode_event

T0 = 1_800_000_000_123


def test_a_new_event_is_todays_envelope() -> None:
    event = Event.new("evt_1", "call.status", T0, "api-1", {"team": "é"}, {"CallStatus": "ringing"})
    assert list(event.to_json()) == ["id", "type", "created_at", "api_id", "metadata", "data"]
    assert encode_event(event.to_json()) == (
        '{"id":"evt_1","type":"call.status","created_at":"2027-01-15T08:00:00.123Z","api_id":"api-1",'
        '"metadata":{"team":"é"},"data":{"CallStatus":"ringing"}}'
    )
    assert event.created_at == iso_ms(T0)


def test_an_event_without_a_request_has_a_null_api_id() -> None:
    event = Event.new("evt_2", "callback.unmatched", T0, None, {}, {"a": 1})
    assert encode_event(event.to_json()) == (
        '{"id":"evt_2","type":"callback.unmatched","created_at":"2027-01-15T08:00:00.123Z","api_id":null,'
        '"metadata":{},"data":{"a":1}}'
    )


def test_the_trace_context_comes_last_and_only_when_set() -> None:
    event = Event.new("evt_3", "request.completed", T0, "api-1", {}, None)
    event.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    stored = encode_event(event.to_json())
    assert stored.endswith(
        ',"data":null,"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    )


def test_a_stored_event_reads_back_and_writes_the_same_bytes() -> None:
    for stored in (
        '{"id":"evt_1","type":"message.status","created_at":"2027-01-15T08:00:00.123Z","api_id":"a",'
        '"metadata":{"k":[1,2.5,null]},"data":{"Status":"delivered","Units":"1"}}',
        '{"id":"evt_2","type":"subscription.disabled","created_at":"2027-01-15T08:00:00.123Z","api_id":null,'
        '"metadata":{},"data":{"subscription_id":"sub_1"},"traceparent":"00-aa-bb-01"}',
    ):
        event = Event.from_json(json.loads(stored))
        assert encode_event(event.to_json()) == stored
        assert Event.from_json(event.to_json()) == event
