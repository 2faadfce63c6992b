"""Pure units: settings, retry policy, callback classification, SSRF address classes."""

from __future__ import annotations

import ipaddress
import random

import pytest
from pydantic import ValidationError

from gateway.callbacks import callback_id, classify, parse_form, uuid_list
from gateway.netguard import is_public
from gateway.settings import Settings
from workers.retry import Outcome, classify_status, next_delay

SCHEDULE = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400]

# .env.example against Settings: tests/test_operations.py; settings validation: tests/test_settings.py.


def test_settings_parse_csv_and_refuse_placeholders() -> None:
    s = Settings(_env_file=None, GATEWAY_API_KEYS="k1, k2,", GATEWAY_RETRY_SCHEDULE="0,1.5")  # type: ignore[call-arg]
    assert s.api_keys == {"k1", "k2"}
    assert s.GATEWAY_RETRY_SCHEDULE == [0, 1.5]
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(_env_file=None, GATEWAY_API_KEYS="changeme")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(_env_file=None, GATEWAY_WEBHOOK_SECRET="plain-secret-value-123")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="whsec_"):
        Settings(_env_file=None, GATEWAY_WEBHOOK_SECRET="whsec_not*base64*at*all*but*long")  # type: ignore[call-arg]
    ok = Settings(_env_file=None, GATEWAY_WEBHOOK_SECRET="whsec_" + "QUJD" * 10)  # type: ignore[call-arg]
    assert ok.GATEWAY_WEBHOOK_SECRET is not None
    with pytest.raises(ValidationError):
        Settings(_env_file=None, GATEWAY_RETRY_SCHEDULE="5,-1")  # type: ignore[call-arg]


def test_secrets_do_not_show_in_repr() -> None:
    s = Settings(_env_file=None, PLIVO_AUTH_TOKEN="tok-very-secret", GATEWAY_API_KEYS="key-very-secret")  # type: ignore[call-arg]
    assert "very-secret" not in repr(s)
    assert "very-secret" not in str(s.model_dump())


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


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_address_classes(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public
