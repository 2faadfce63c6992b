"""Hostile and random input to the receiver and the API: never a 500, never a stack trace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.app import create_app

content_types = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
        "application/x-www-form-urlencoded; charset=latin-1",
    ]
)
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5).map(
        lambda d: httpx.QueryParams(d).__str__().encode()
    ),
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=10,
    ).map(lambda v: httpx.Response(200, json=v).content),
)
header_names = st.sampled_from(
    ["X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce", "X-Plivo-Signature-V2", "Content-Length"]
)


@pytest.fixture(scope="module")
async def fuzz_clients(
    redis_server: Any, postgres_server: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two in-process apps (signatures checked / not checked), each started once."""
    from gateway.settings import Settings

    def build(verify: bool) -> Any:
        return create_app(
            Settings(  # type: ignore[call-arg]
                _env_file=None,
                REDIS_URL=redis_server.url,
                DATABASE_URL=postgres_server.url() + "?search_path=fuzz",
                GATEWAY_KEY_PREFIX="fuzz:",
                PLIVO_AUTH_ID="MAFUZZFUZZFUZZFUZZ00",
                PLIVO_AUTH_TOKEN="fuzz-token",
                GATEWAY_API_KEYS="fuzz-key",
                GATEWAY_VERIFY_SIGNATURES=verify,
                PLIVO_API_URL="http://127.0.0.1:9",
                UPSTREAM_MAX_ATTEMPTS=1,
            )
        )

    checked, unchecked = build(True), build(False)
    async with (
        checked.router.lifespan_context(checked),
        unchecked.router.lifespan_context(unchecked),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=checked), base_url="http://gw") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=unchecked), base_url="http://gw") as b,
    ):
        yield a, b


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"api_id", "error"}
        assert "Traceback" not in body["error"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=bodies,
    content_type=content_types,
    method=st.sampled_from(["POST", "GET"]),
    query=st.text(max_size=40),
    extra=st.dictionaries(
        header_names,
        st.text(alphabet=st.characters(max_codepoint=126, min_codepoint=32), max_size=40),
        max_size=3,
    ),
    verify=st.booleans(),
)
async def test_receiver_never_fails_on_random_input(
    fuzz_clients: Any,
    body: bytes,
    content_type: str,
    method: str,
    query: str,
    extra: dict[str, str],
    verify: bool,
) -> None:
    client = fuzz_clients[0] if verify else fuzz_clients[1]
    headers = {"content-type": content_type, **{k: v for k, v in extra.items() if k != "Content-Length"}}
    response = await client.request(
        method, "/callbacks/plivo", params={"q": query}, content=body, headers=headers
    )
    _check(response)
    if verify:
        assert response.status_code in (400, 403, 413, 415)
    else:
        assert response.status_code in (200, 400, 413, 415)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, content_type=content_types, idem=st.none() | st.text(max_size=300))
async def test_submit_never_fails_on_random_input(
    fuzz_clients: Any, body: bytes, content_type: str, idem: str | None
) -> None:
    client = fuzz_clients[0]
    headers = {"content-type": content_type, "authorization": "Bearer fuzz-key"}
    if idem is not None and idem.isprintable() and idem.isascii():
        headers["idempotency-key"] = idem
    response = await client.post("/v1/requests", content=body, headers=headers)
    _check(response)
    assert response.status_code in (400, 415, 422, 502)
