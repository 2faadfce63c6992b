"""Outbound safety: SSRF checks at connect time (DNS rebinding), allowlists, pure helpers."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.domain.events import Event
from gateway.domain.targets import targets_from_json
from gateway.services.netguard import ExchangeError, IPAddress, Policy, refusal, webhook_client
from tests.conftest import Stack
from tests.support.receiver import wait_until
from tests.support.scripted import Reply, ScriptedEndpoint
from tests.support.servers import LoopThread
from workers.fanout import deliveries_for
from workers.main import run_worker
from workers.retry import Outcome, next_delay, parse_retry_after

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


@pytest.fixture
async def endpoint() -> AsyncIterator[ScriptedEndpoint]:
    ep = ScriptedEndpoint().start()
    yield ep
    ep.stop()


def rebinding(first: str, then: str) -> Callable[[str, int], Any]:
    """A resolver answering ``first`` once, then ``then``: a DNS rebinding attacker's name."""
    answers = [first]

    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(answers.pop() if answers else then)]

    return resolve


async def test_dns_rebinding_is_caught_at_connect_time(endpoint: ScriptedEndpoint) -> None:
    resolver = rebinding("93.184.216.34", "127.0.0.1")
    port = endpoint.server.port if endpoint.server else 0
    url = f"http://rebind.example:{port}/hook"
    assert await refusal(url, allow_private=False, resolver=resolver) is None  # looked public
    client = webhook_client(
        Policy.build(allow_private=False, resolver=resolver), timeout=2, max_connections=2
    )
    async with client:
        with pytest.raises(ExchangeError, match="non-public"):
            await client.request("POST", url, body=b"{}")
    assert endpoint.received == []


async def test_connect_time_allowlist_and_plain_public_names(endpoint: ScriptedEndpoint) -> None:
    port = endpoint.server.port if endpoint.server else 0

    async def loopback(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address("127.0.0.1")]

    allowed = Policy.build(allow_private=False, allow_cidrs=["127.0.0.0/8"], resolver=loopback)
    async with webhook_client(allowed, timeout=2, max_connections=2) as client:
        answer = await client.request("POST", f"http://service.internal:{port}/hook", body=b"{}")
    assert answer.status == 200 and len(endpoint.received) == 1
    assert endpoint.received[0].headers["host"] == f"service.internal:{port}"  # name kept for vhosts


async def test_worker_refuses_at_connect_time_what_the_api_accepted(
    stack_factory: Callable[..., Any], endpoint: ScriptedEndpoint
) -> None:
    # The API allows private targets, the worker does not: the connect-time check has the last word.
    stack: Stack = await stack_factory(worker=False)
    body = {"url": endpoint.url(), "event_types": ["*"], "retry_schedule": [0]}
    answer = await stack.client.post(stack.gateway.url + "/v1/subscriptions", json=body, headers=stack.auth)
    sub = answer.json()["subscription"]
    strict = stack.settings.model_copy(update={"GATEWAY_ALLOW_PRIVATE_WEBHOOKS": False})
    worker = LoopThread(lambda stop: run_worker(strict, stop)).start()
    try:
        await stack.submit({"resource": "Call/", "params": CALL})
        found: list[dict[str, Any]] = []

        async def failed() -> bool:
            got = await stack.client.get(
                stack.gateway.url + "/v1/deliveries",
                params={"subscription_id": sub["id"], "status": "failed"},
                headers=stack.auth,
            )
            found[:] = got.json()["objects"]
            return bool(found)

        await wait_until(failed)
        assert "non-public" in found[0]["attempts"][0]["error"]
        await asyncio.sleep(0.2)
        assert endpoint.received == []
    finally:
        worker.stop()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("10.2.0.1", False),
        ("fd00::5", True),
        ("8.8.8.8", True),
    ],
)
def test_allowlist_matches_ipv4_ipv6_and_mapped(address: str, allowed: bool) -> None:
    policy = Policy.build(allow_private=False, allow_cidrs=["10.1.0.0/16", "fd00::/64"])
    assert policy.permits(ipaddress.ip_address(address)) is allowed


def test_retry_after_parsing() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:30 GMT", 1_800_000_000.0) is not None
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_per_subscription_schedule_and_exhaustion() -> None:
    assert next_delay(1, Outcome.HTTP_ERROR, [0, 1], jitter=0) == 1
    assert next_delay(2, Outcome.HTTP_ERROR, [0, 1]) is None  # the schedule is spent: dead letter
    assert next_delay(1, Outcome.HTTP_ERROR, [0]) is None


def test_fan_out_targets_include_subscriptions_once() -> None:
    event = Event.from_json({"id": "evt_1", "type": "t", "created_at": "", "api_id": None, "metadata": {}})
    url = "http://h/x"
    out = deliveries_for(
        event,
        targets_from_json([{"type": "webhook", "url": url}, {"type": "webhook", "url": url}]),
        [("sub_a", url), ("sub_b", url)],
    )
    targets = [t.to_json() for _, t in out]
    assert len(out) == 3  # the request's target once, each subscription once (same URL or not)
    assert {t.get("subscription") for t in targets} == {None, "sub_a", "sub_b"}
    assert len({d for d, _ in out}) == 3


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "169.254.169.254", "[fe80::1%25lo]"]
)
async def test_ip_literals_are_checked_too(endpoint: ScriptedEndpoint, host: str) -> None:
    # The HTTP client connects to an IP literal without resolving it: the guard must still refuse.
    port = endpoint.server.port if endpoint.server else 0
    async with webhook_client(Policy.build(allow_private=False), timeout=2, max_connections=2) as client:
        with pytest.raises(ExchangeError, match="non-public"):
            await client.request("POST", f"http://{host}:{port}/hook", body=b"{}")
    allowed = Policy.build(allow_private=False, allow_cidrs=["127.0.0.0/8"])
    async with webhook_client(allowed, timeout=2, max_connections=2) as client:
        answer = await client.request("POST", f"http://127.0.0.1:{port}/hook", body=b"{}")
    assert answer.status == 200
    assert len(endpoint.received) == 1  # only the allowlisted request arrived


async def test_one_deadline_covers_a_slowly_trickled_answer() -> None:
    # Headers at once, then a byte every 100 ms, forever: the attempt still ends at its deadline.
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
        try:
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    async with webhook_client(Policy.build(allow_private=True), timeout=0.5, max_connections=2) as client:
        started = loop.time()
        with pytest.raises(ExchangeError) as caught:
            await client.request("POST", f"http://127.0.0.1:{port}/hook", body=b"{}", limit=1_000_000)
        assert caught.value.timeout
        assert loop.time() - started < 2.0
    server.close()


async def test_waiting_for_a_connection_is_not_counted_in_the_attempt_deadline(
    endpoint: ScriptedEndpoint,
) -> None:
    """Two connections, six exchanges with an endpoint that answers in 0.6 s under a 1 s deadline:
    the ones that waited for a connection still get their whole second (aiohttp alone would have
    counted the wait, and four of them would have timed out)."""
    endpoint.script = [Reply(200, delay=0.6) for _ in range(6)]
    async with webhook_client(
        Policy.build(allow_private=True), timeout=1.0, max_connections=2, slot_wait=5.0
    ) as client:
        answers = await asyncio.gather(
            *(client.request("POST", endpoint.url(), body=b"{}") for _ in range(6)), return_exceptions=True
        )
    assert [getattr(a, "status", a) for a in answers] == [200] * 6
    assert len(endpoint.received) == 6


async def test_an_exchange_that_never_gets_a_connection_is_not_made(endpoint: ScriptedEndpoint) -> None:
    endpoint.script = [
        Reply(200, delay=0.8),
        Reply(200, delay=0.8),
        Reply(200, delay=0.4),
        Reply(200, delay=0.4),
    ]
    async with webhook_client(
        Policy.build(allow_private=True), timeout=2.0, max_connections=2, slot_wait=0.2
    ) as client:
        answers = await asyncio.gather(
            *(client.request("POST", endpoint.url(), body=b"{}") for _ in range(3)), return_exceptions=True
        )
        assert sorted(type(a).__name__ for a in answers) == ["Answer", "Answer", "NoSlot"]
        assert len(endpoint.received) == 2  # the third was never sent
        # Both slots came back (with one leaked, the second of these would wait 0.4 s: NoSlot).
        again = await asyncio.gather(*(client.request("POST", endpoint.url(), body=b"{}") for _ in range(2)))
        assert [a.status for a in again] == [200, 200]
