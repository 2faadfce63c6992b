"""The receiver's fast paths give exactly what the general code gives: form parsing against
``parse_qsl``, and the signed string from a once-split public URL against ``v3_string_to_sign``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.api.routes.receiver import Signatures
from gateway.domain.callbacks import parse_form
from gateway.domain.errors import BadRequest
from gateway.domain.signing import Key, sign_v2, sign_v3, v3_string_from_parts, v3_string_to_sign
from gateway.settings import Settings

# Text rich in what form encoding treats specially.
form_text = st.text(alphabet=st.sampled_from("ab=&+%2041C3A9Ff ;?#é✓\x00"), max_size=60)


def reference_parse_form(raw: bytes) -> dict[str, Any]:
    """The previous implementation, on parse_qsl."""
    text = raw.decode("utf-8")
    out: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=1000):
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


@settings(max_examples=2000, deadline=None)
@given(text=form_text)
def test_parse_form_equals_parse_qsl(text: str) -> None:
    assert parse_form(text.encode()) == reference_parse_form(text.encode())


def test_parse_form_limits_and_errors() -> None:
    assert parse_form(b"&".join([b"a=1"] * 1000)) == {"a": ["1"] * 1000}
    with pytest.raises(BadRequest, match="Max number of fields"):
        parse_form(b"&".join([b"a=1"] * 1001))
    with pytest.raises(ValueError, match="Max number of fields"):
        reference_parse_form(b"&".join([b"a=1"] * 1001))
    with pytest.raises(BadRequest, match="UTF-8"):
        parse_form(b"a=\xff")
    assert parse_form(b"") == {}
    assert parse_form(b"a=%ff&b+c=d+e") == {"a": "\ufffd", "b c": "d e"}


def _settings(public: str, **extra: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None, GATEWAY_PUBLIC_URL=public, PLIVO_AUTH_TOKEN="own-token", **extra
    )


publics = st.sampled_from(
    [
        "http://127.0.0.1:8000",
        "https://gw.example.com",
        "https://gw.example.com:8443/prefix",
        "https://h/p?x=1",
    ]
)
queries = st.text(alphabet=st.sampled_from("ab=&+%20cg_ref#é\t"), max_size=30)
params = st.dictionaries(
    st.text(alphabet="aBc_", min_size=1, max_size=4),
    st.text(max_size=6) | st.lists(st.text(max_size=4), max_size=3),
    max_size=4,
)


@settings(max_examples=1000, deadline=None)
@given(public=publics, query=queries, method=st.sampled_from(["GET", "POST", "HEAD"]), p=params)
def test_signed_string_from_parts_equals_the_general_one(
    public: str, query: str, method: str, p: dict[str, Any]
) -> None:
    signatures = Signatures(_settings(public))
    path = "/callbacks/plivo"
    url = f"{public}{path}" + (f"?{query}" if query else "")
    # The receiver hands over the query Starlette's request.url.query would give; as uvicorn
    # never passes a raw '#', tab or newline, the two agree whenever the URL is well formed.
    if not any(c in query for c in "#\t\r\n"):
        base, signed_query = signatures.url_parts(path, query)
        assert v3_string_from_parts(method, base, signed_query, p) == v3_string_to_sign(method, url, p)


def test_verified_nonce_accepts_each_signature_kind() -> None:
    public = "https://gw.example.com"
    signatures = Signatures(_settings(public, PLIVO_MAIN_AUTH_TOKEN="main-token"))
    url = public + "/callbacks/plivo?cg_ref=r1"
    p = {"api_id": "a1", "Tag": ["b", "a"]}

    def check(headers: dict[bytes, str], method: str = "POST") -> str | None:
        found = signatures.verify(
            method, "/callbacks/plivo", "cg_ref=r1", None if method == "GET" else p, headers
        )
        return found and f"{found.version}:{found.replay_key}"

    v3 = sign_v3("POST", url, p, "n1", "own-token")
    assert check({b"x-plivo-signature-v3": v3, b"x-plivo-signature-v3-nonce": "n1"})
    assert check({b"x-plivo-signature-v3": f"bogus,{v3}", b"x-plivo-signature-v3-nonce": "n1"})
    ma = sign_v3("POST", url, p, "n1", "main-token")
    assert check({b"x-plivo-signature-ma-v3": ma, b"x-plivo-signature-v3-nonce": "n1"})
    assert not check({b"x-plivo-signature-v3": ma, b"x-plivo-signature-v3-nonce": "n1"})
    get = sign_v3("GET", url, None, "n1", "own-token")
    assert check({b"x-plivo-signature-v3": get, b"x-plivo-signature-v3-nonce": "n1"}, "GET")
    v2 = sign_v2(url, "n2", "own-token")
    assert check({b"x-plivo-signature-v2": v2, b"x-plivo-signature-v2-nonce": "n2"})
    assert not check({b"x-plivo-signature-v2": v2, b"x-plivo-signature-v2-nonce": "n3"})
    assert not check({b"x-plivo-signature-v3": v3})  # no nonce
    assert not check({})
    # The replay key is (version, nonce): a replay is recognised however the header is spelt,
    # and a retry (Plivo signs it with a new nonce) is not.
    again = check({b"x-plivo-signature-v3": v3, b"x-plivo-signature-v3-nonce": "n1"})
    assert again is not None and again.startswith("v3:")
    for spelling in (f"{v3},x", f"junk,{v3}", f"{v3},,", f" {v3} "):
        assert check({b"x-plivo-signature-v3": spelling, b"x-plivo-signature-v3-nonce": "n1"}) == again
    assert check({b"x-plivo-signature-ma-v3": ma, b"x-plivo-signature-v3-nonce": "n1"}) == again
    assert again != check({b"x-plivo-signature-v2": v2, b"x-plivo-signature-v2-nonce": "n2"})
    v2_again = check({b"x-plivo-signature-v2": v2, b"x-plivo-signature-v2-nonce": "n2"})
    assert check({b"x-plivo-signature-v2": f"junk,{v2},", b"x-plivo-signature-v2-nonce": "n2"}) == v2_again


def test_v3_headers_decide_over_v2() -> None:
    """A valid V2 pair does not vouch for a callback whose V3 headers fail: V2 signs no body."""
    public = "https://gw.example.com"
    signatures = Signatures(_settings(public))
    url = public + "/callbacks/plivo"
    v2 = {b"x-plivo-signature-v2": sign_v2(url, "n2", "own-token"), b"x-plivo-signature-v2-nonce": "n2"}
    assert signatures.verify("POST", "/callbacks/plivo", "", {"a": "1"}, v2) is not None
    junk_v3 = {**v2, b"x-plivo-signature-v3": "junk", b"x-plivo-signature-v3-nonce": "n3"}
    assert signatures.verify("POST", "/callbacks/plivo", "", {"a": "1"}, junk_v3) is None
    assert (
        signatures.verify(
            "POST", "/callbacks/plivo", "", {"a": "1"}, {**v2, b"x-plivo-signature-v3-nonce": "n"}
        )
        is None
    )


def test_signature_versions_setting_refuses_v2() -> None:
    public = "https://gw.example.com"
    url = public + "/callbacks/plivo"
    v2 = {b"x-plivo-signature-v2": sign_v2(url, "n2", "own-token"), b"x-plivo-signature-v2-nonce": "n2"}
    v3 = {
        b"x-plivo-signature-v3": sign_v3("POST", url, {"a": "1"}, "n3", "own-token"),
        b"x-plivo-signature-v3-nonce": "n3",
    }
    only_v3 = Signatures(_settings(public, GATEWAY_SIGNATURE_VERSIONS="v3"))
    assert only_v3.verify("POST", "/callbacks/plivo", "", {"a": "1"}, v2) is None
    assert only_v3.verify("POST", "/callbacks/plivo", "", {"a": "1"}, v3) is not None
    only_v2 = Signatures(_settings(public, GATEWAY_SIGNATURE_VERSIONS="v2"))
    assert only_v2.verify("POST", "/callbacks/plivo", "", {"a": "1"}, v3) is None
    assert only_v2.verify("POST", "/callbacks/plivo", "", {"a": "1"}, v2) is not None


def test_a_key_without_token_matches_nothing() -> None:
    assert not Key("").matches("message", "anything")
    assert not Key("t").matches("message", "")


@settings(max_examples=500, deadline=None)
@given(raw=st.text(alphabet=st.sampled_from("ab=&+%20#\t?/é"), max_size=30))
def test_query_is_read_as_starlette_reads_it(raw: str) -> None:
    from starlette.datastructures import URL

    from gateway.api.routes.receiver import _query

    scope = {"type": "http", "path": "/callbacks/plivo", "query_string": raw.encode(), "headers": []}
    assert _query(scope) == URL(scope=scope).query


@settings(max_examples=2000, deadline=None)
@given(query=form_text)
def test_query_map_equals_parse_qsl(query: str) -> None:
    from urllib.parse import parse_qsl

    from gateway.domain.signing import _query_map

    expected: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        expected.setdefault(key, []).append(value)
    assert _query_map(query) == expected
