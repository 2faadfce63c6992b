"""What a callback is (gateway.domain.callbacks): classification, correlation links, identity."""

from __future__ import annotations

from gateway.domain.callbacks import callback_id, classify, parse_form, uuid_list


def test_classify_callbacks() -> None:
    result = classify("c", {"api_id": "a", "message_uuid": ["m1", "m2"]}, {})
    assert (result.kind, result.ckey, result.links) == ("result", "api:a", ["msg:m1", "msg:m2"])
    call = classify("c", {"api_id": "a", "request_uuid": "r1"}, {})
    assert call.links == ["call:r1"]
    status = classify("c", {"MessageUUID": "m1", "Status": "sent", "Sequence": "2"}, {})
    assert (status.kind, status.ckey, status.seq, status.event_type) == (
        "message",
        "msg:m1",
        "2",
        "message.status",
    )
    voice = classify("c", {"CallUUID": "c1", "RequestUUID": "r1", "CallStatus": "ringing"}, {})
    assert (voice.ckey, voice.event_type) == ("call:r1", "call.status")
    by_ref = classify("c", {"message": "ok"}, parse_form(b"cg_ref=R1"))
    assert by_ref.ckey == "ref:R1"
    nothing = classify("c9", {"hello": "world"}, {})
    assert (nothing.kind, nothing.ckey) == ("unknown", "none:c9")


def test_uuid_list_shapes() -> None:
    assert uuid_list(["a", "b"]) == ["a", "b"]
    assert uuid_list("a") == ["a"]
    assert uuid_list('["a", "b"]') == ["a", "b"]
    assert uuid_list("a,b") == ["a", "b"]
    assert uuid_list(None) == [] and uuid_list("") == []


def test_callback_identity_ignores_key_order_only() -> None:
    assert callback_id("q", {"a": "1", "b": "2"}) == callback_id("q", {"b": "2", "a": "1"})
    assert callback_id("q", {"a": "1"}) != callback_id("q", {"a": "2"})
    assert callback_id("q1", {"a": "1"}) != callback_id("q2", {"a": "1"})
