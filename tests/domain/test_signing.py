"""Signatures: the spec's vectors, the official SDK as oracle, and Standard Webhooks."""

from __future__ import annotations

import base64
import time

import plivo.utils as plivo_utils
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook

from gateway.domain.signing import (
    new_webhook_secret,
    sign_v2,
    sign_v3,
    sign_webhook,
    verify_v2,
    verify_v3,
)

V3_TOKEN = "Y2Q2ZDgxZmY5YWRiOTI5YmQ1Njg0MTAxZWIyOTc4"
V3_NONCE = "31627761595286130198"
V3_PARAMS = {
    "Direction": "outbound",
    "From": "19792014278",
    "CallStatus": "in-progress",
    "BillRate": "0.002",
    "Event": "StartApp",
    "ALegUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
    "CallUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
    "RequestUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
    "ALegRequestUUID": "3e82ae9d-2c78-4d85-b1a4-6eae7dbafb36",
    "ParentAuthID": "MANWVLYTK4ZWU1YTY4QA",
    "SessionStart": "2020-04-08 11:34:33.238707",
    "To": "sip:PlivoSignature382029104058171078704104@phone-qa.voice.plivodev.com",
    "SIP-H-To": "<sip:PlivoSignature382029104058171078704104@52.9.11.55;transport=udp>;tag=1",
}
URL_Q = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml/?a=b&c=d"
URL = "https://plivobin.non-prod.plivops.com/api/v1/validate_signature03.xml"


def test_v2_vector() -> None:
    expected = "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc="
    assert sign_v2("https://answer.url", "12345", "my_auth_token") == expected
    assert verify_v2("https://answer.url", "12345", expected, ["my_auth_token"])
    assert not verify_v2("https://answer.url", "12346", expected, ["my_auth_token"])


def test_v3_vectors() -> None:
    cases = [
        ("POST", URL_Q, "k7Pusd4OxCIjR5IfA9iedDNu/h/gbdYqdzG/MiYtd1c="),
        ("GET", URL_Q, "UBq8jAtd32wR8EK9VgxbBn4n5rpI/l1H9iN4WfSEHFQ="),
        ("POST", URL, "iAjE5QqI37mbkYe4w3jTMudqEzbDufdqi7sYwTu64e0="),
        ("GET", URL, "i/MQsaQSAd6fiKhOh2qeeeLHZ9faldADSb3/7+Akfbc="),
    ]
    for method, url, expected in cases:
        assert sign_v3(method, url, V3_PARAMS, V3_NONCE, V3_TOKEN) == expected, (method, url)
        assert verify_v3(method, url, V3_PARAMS, V3_NONCE, expected, [V3_TOKEN])


def test_v3_several_signatures_and_wrong_token() -> None:
    good = sign_v3("POST", URL, V3_PARAMS, V3_NONCE, V3_TOKEN)
    assert verify_v3("POST", URL, V3_PARAMS, V3_NONCE, f"bogus=,{good}", [V3_TOKEN])
    assert not verify_v3("POST", URL, V3_PARAMS, V3_NONCE, good, ["another-token"])
    assert not verify_v3("POST", URL, V3_PARAMS, "", good, [V3_TOKEN])
    assert not verify_v3("POST", URL, V3_PARAMS, V3_NONCE, "", [V3_TOKEN])
    tampered = {**V3_PARAMS, "CallStatus": "completed"}
    assert not verify_v3("POST", URL, tampered, V3_NONCE, good, [V3_TOKEN])


def test_v3_spec_example_string() -> None:
    from gateway.domain.signing import v3_string_to_sign

    params = {"Text": "héllo", "MessageUUID": "abc", "a": "1 2"}
    got = v3_string_to_sign("POST", "https://ex.com:8443/cb/?z=1#ct=2000", params)
    assert got == "https://ex.com:8443/cb/?z=1.MessageUUIDabcTexthélloa1 2"


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
keys = st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=8)
values = st.one_of(text, st.lists(text, min_size=1, max_size=3))


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(keys, values, max_size=6),
    query=st.dictionaries(keys, st.text(alphabet="abc123", max_size=4), max_size=3),
    method=st.sampled_from(["GET", "POST"]),
)
def test_v3_matches_official_sdk(params: dict[str, object], query: dict[str, str], method: str) -> None:
    from urllib.parse import urlencode

    uri = "https://gw.example.com:8443/callbacks/plivo" + (f"?{urlencode(query)}" if query else "")
    signature = sign_v3(method, uri, params, "9876", "tok")
    assert plivo_utils.validate_v3_signature(method, uri, "9876", "tok", signature, dict(params))


def test_standard_webhooks_signature_verifies_with_official_package() -> None:
    secret = new_webhook_secret()
    body = b'{"id":"evt_1","type":"request.completed"}'
    now = int(time.time())
    header = sign_webhook([secret], "evt_1", now, body)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(now), "webhook-signature": header}
    assert Webhook(secret).verify(body, headers) == {"id": "evt_1", "type": "request.completed"}


def test_standard_webhooks_two_secrets_both_verify() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    body = b"{}"
    now = int(time.time())
    header = sign_webhook([old, new], "evt_2", now, body)
    headers = {"webhook-id": "evt_2", "webhook-timestamp": str(now), "webhook-signature": header}
    for secret in (old, new):
        Webhook(secret).verify(body, headers)
    assert len(base64.b64decode(new.removeprefix("whsec_"))) == 32
