"""Legacy numeric IPv4 hosts (``2130706433``, ``127.1``, ``0x7f.1`` ...): refused at registration
and, on its own, at connect time, whatever the installed aiohttp does with them."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp.connector
import pytest
from redis.asyncio import Redis

from gateway.services import netguard
from gateway.services.netguard import (
    Blocked,
    ExchangeError,
    GuardedResolver,
    IPAddress,
    Policy,
    refusal,
    webhook_client,
)
from gateway.store.delivery import DeliveryStore
from tests.conftest import Stack
from tests.support.receiver import wait_until
from tests.support.scripted import ScriptedEndpoint

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}
REFUSED = "legacy numeric form"

# Each is 127.0.0.1 to inet_aton/getaddrinfo (parsed locally: no DNS query, on any code).
LOOPBACK_FORMS = [
    "2130706433",  # one decimal number
    "017700000001",  # one octal number
    "0x7f000001",  # one hex number
    "127.1",  # two parts
    "127.0.1",  # three parts
    "0177.0.0.1",  # an octal part
    "0x7f.1",  # a hex part
    "0X7F.0.0.1",  # upper-case hex
]
# Public addresses written the same ways: refused for their form, not for where they point.
PUBLIC_FORMS = ["134744072", "8.8.2056", "0x8.0x8.0x8.0x8"]
# What glibc leaves to DNS but WHATWG parsers and some resolvers read as addresses: checked
# only against the in-memory resolver below, so that no test sends them to a real DNS server.
TRAILING_DOT_FORMS = ["127.0.0.1.", "2130706433.", "127.1."]


@pytest.fixture
async def endpoint() -> AsyncIterator[ScriptedEndpoint]:
    ep = ScriptedEndpoint().start()
    yield ep
    ep.stop()


def act_as_aiohttp_before_3_14_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to 3.14.0, ``TCPConnector._resolve_host`` took any digits-and-dots host for an IP
    literal and handed it to the socket layer (which reads ``2130706433`` as 127.0.0.1) without
    asking the resolver; 3.14.1 added the ``is_canonical_ipv4_address`` test that refuses them.
    Making that test pass everything restores the old path."""
    monkeypatch.setattr(aiohttp.connector, "is_canonical_ipv4_address", lambda host: True)


@pytest.fixture(params=[True, False], ids=["aiohttp-refuses", "aiohttp-before-3.14.1"])
def aiohttp_refuses(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Once with the installed aiohttp, once with its connector as before 3.14.1: the guard
    must hold without aiohttp's help."""
    if not request.param:
        act_as_aiohttp_before_3_14_1(monkeypatch)
    return bool(request.param)


def lenient(calls: list[str]) -> netguard.Resolver:
    """A resolver reading every numeric form as an address (trailing dot included), offline."""

    async def resolve(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        packed = socket.inet_aton(host.removesuffix("."))
        return [ipaddress.IPv4Address(packed)]

    return resolve


# --- registration: subscription create and submit targets -------------------------------------


@pytest.mark.parametrize("host", LOOPBACK_FORMS + PUBLIC_FORMS)
async def test_registration_refuses_each_form(stack_factory: Callable[..., Any], host: str) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_ALLOW_PRIVATE_WEBHOOKS=False)
    url = f"http://{host}:8080/hook"
    sub = await stack.client.post(
        stack.gateway.url + "/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=stack.auth
    )
    assert sub.status_code == 400, sub.text
    assert sub.json()["error"].startswith("url: ") and REFUSED in sub.json()["error"]
    submit = await stack.submit(
        {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": url}]}
    )
    assert submit.status_code == 400, submit.text
    assert submit.json()["error"].startswith("targets.0.url: ") and REFUSED in submit.json()["error"]
    assert stack.sandbox_state.requests == []  # refused before anything went upstream


@pytest.mark.parametrize("host", LOOPBACK_FORMS + PUBLIC_FORMS + TRAILING_DOT_FORMS)
async def test_registration_refuses_them_even_with_private_targets_allowed(host: str) -> None:
    # aiohttp (>= 3.14.1) will not connect to them: accepting one would store a dead target.
    calls: list[str] = []
    why = await refusal(f"http://{host}/hook", allow_private=True, resolver=lenient(calls))
    assert why is not None and REFUSED in why
    strict = await refusal(f"http://{host}/hook", allow_private=False, resolver=lenient(calls))
    assert strict is not None and REFUSED in strict
    assert calls == []  # judged on its form: never resolved


# --- connect time: the worker's resolver and client, as for a URL stored under a looser policy ---


@pytest.mark.parametrize("host", LOOPBACK_FORMS + PUBLIC_FORMS + TRAILING_DOT_FORMS)
async def test_connect_time_resolver_refuses_each_form_on_its_own(host: str) -> None:
    # Every address these stand for is permitted (loopback allowlisted, the rest public), so
    # only the form can make the resolver refuse; a resolver that parses them is at hand.
    calls: list[str] = []
    policy = Policy.build(allow_private=False, allow_cidrs=["127.0.0.0/8"], resolver=lenient(calls))
    with pytest.raises(Blocked, match=REFUSED):
        await GuardedResolver(policy).resolve(host, 80)
    assert calls == []


@pytest.mark.parametrize("host", LOOPBACK_FORMS)
async def test_connect_time_client_refuses_each_form_and_nothing_arrives(
    endpoint: ScriptedEndpoint, aiohttp_refuses: bool, host: str
) -> None:
    port = endpoint.server.port if endpoint.server else 0
    async with webhook_client(Policy.build(allow_private=False), timeout=2, max_connections=2) as client:
        with pytest.raises(ExchangeError, match=REFUSED):  # our refusal, not aiohttp's
            await client.request("POST", f"http://{host}:{port}/hook", body=b"{}")
    await asyncio.sleep(0.1)
    assert endpoint.received == []


async def test_the_simulated_old_aiohttp_does_deliver_to_them(
    endpoint: ScriptedEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bypass the guard closes, shown with a plain session (no guard): the simulation of
    # aiohttp before 3.14.1 above is faithful, so the tests using it are not vacuous.
    act_as_aiohttp_before_3_14_1(monkeypatch)
    port = endpoint.server.port if endpoint.server else 0
    session = aiohttp.ClientSession()
    try:
        async with session.post(f"http://2130706433:{port}/hook", data=b"{}") as response:
            assert response.status == 200
    finally:
        await session.close()
    assert len(endpoint.received) == 1


async def test_worker_refuses_a_stored_numeric_target_and_nothing_arrives(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint, redis: Redis, aiohttp_refuses: bool
) -> None:
    # A subscription stored before the form was refused at registration: the worker's own
    # connect-time check is all that stands between it and the loopback endpoint.
    stack: Stack = await stack_factory(GATEWAY_ALLOW_PRIVATE_WEBHOOKS=False)
    port = endpoint.server.port if endpoint.server else 0
    dstore = DeliveryStore(redis, stack.settings.GATEWAY_KEY_PREFIX, retention=3600)
    sub = await dstore.create_subscription(
        url=f"http://2130706433:{port}/hook",
        event_types=["*"],
        description="stored under an older policy",
        retry_schedule=[0],
        rate_limit=None,
    )
    submitted = await stack.submit({"resource": "Call/", "params": CALL})
    assert submitted.status_code == 202, submitted.text
    failed: list[dict[str, Any]] = []

    async def check() -> bool:
        got = await stack.client.get(
            stack.gateway.url + "/v1/deliveries",
            params={"subscription_id": sub.id, "status": "failed"},
            headers=stack.auth,
        )
        failed[:] = got.json()["objects"]
        return bool(failed)

    await wait_until(check)
    assert REFUSED in failed[0]["attempts"][0]["error"]
    await asyncio.sleep(0.2)
    assert endpoint.received == []


# --- what stays allowed -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["8.8.8.8", "[2001:4860:4860::8888]", "example.com", "1.example.com", "0x7f.example", "123.45.example"],
)
async def test_dotted_quads_ipv6_and_names_are_not_taken_for_numeric_forms(host: str) -> None:
    async def public(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("93.184.216.34")]

    assert await refusal(f"http://{host}/hook", allow_private=False, resolver=public) is None


def test_numeric_form_follows_the_url_standard_ends_in_a_number_rule() -> None:
    for host in LOOPBACK_FORMS + PUBLIC_FORMS + TRAILING_DOT_FORMS + ["example.123", "0x", "1.2.3.4.5"]:
        assert netguard.is_numeric_form(host), host
    for host in ["127.0.0.1", "8.8.8.8", "::1", "[::ffff:127.0.0.1]", "localhost", "0x7f.example", ""]:
        assert not netguard.is_numeric_form(host), host
