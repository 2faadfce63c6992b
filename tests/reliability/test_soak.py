"""Load held: steady submits (through the sandbox, which calls back) with a flaky subscriber.
Every process's memory stays flat, Redis holds no per-request record once the TTLs have run out,
and every request completes with every event delivered.

20 s by default; `pytest --long` holds it for 10 minutes."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.reliability.harness import API_KEY, AUTH_ID, Proc, report, wait_http
from tests.reliability.test_faults import Rig
from tests.support.receiver import wait_until
from tests.support.servers import ServerThread
from tooling.embedded_redis import free_port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Flaky:
    """Answers 500 to a fifth of the deliveries, at random; records the event ids it accepted."""

    def __init__(self) -> None:
        self.accepted: set[str] = set()
        self.refused = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = json.loads(await request.body())
            if random.random() < 0.2:
                self.refused += 1
                return Response(status_code=500)
            self.accepted.add(body["id"])
            return Response(status_code=204)

        return Starlette(routes=[Route("/{p:path}", hook, methods=["POST"])])


async def test_load_held_with_a_flaky_subscriber(
    rig: Rig, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    seconds = 600 if request.config.getoption("--long") else 20
    rate = 40  # submits per second, each answered by a callback from the sandbox
    ttl = "5"
    flaky = Flaky()
    flaky_server = ServerThread(flaky.app()).start()
    sandbox_port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    overrides = dict(
        PLIVO_API_URL=f"http://127.0.0.1:{sandbox_port}",
        GATEWAY_RETENTION=ttl,
        GATEWAY_LINK_TTL=ttl,  # finished requests' records and links (the rest follows the retention)
        GATEWAY_DEDUP_TTL=ttl,
        GATEWAY_NONCE_WINDOW=ttl,
        GATEWAY_IDEMPOTENCY_TTL=ttl,
        # Enough attempts that a random 20 % refusal never exhausts them, even when a loaded
        # machine also turns some attempts into timeouts; a breaker that opens recovers quickly.
        GATEWAY_RETRY_SCHEDULE="0,0.2,0.4,0.8,1,1,1,1,2,2,2,2",
        GATEWAY_BREAKER_COOLDOWN="1",
        GATEWAY_OVERLOAD_FLOOR="0.2",
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
    )
    sandbox = Proc(["sandbox", "--port", str(sandbox_port)], rig.env(**overrides)).start()
    rig.procs.append(sandbox)
    gateway = await rig.gateway(rig.public_port, log_path=logs / "gateway.log", **overrides)  # type: ignore[attr-defined]
    worker = rig.worker(log_path=logs / "worker.log", **overrides)
    await wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/requests")
    redis = Redis.from_url(rig.redis.url, decode_responses=True)
    baseline = (await redis.info("memory"))["used_memory"]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    base = f"http://127.0.0.1:{gateway.port}"
    api_ids: list[str] = []
    rss_start: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        sub = await client.post(
            base + "/v1/subscriptions",
            json={"url": flaky_server.url + "/hook", "event_types": ["request.completed"]},
            headers=auth,
        )
        assert sub.status_code == 201, sub.text
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            if n == rate * 2:  # after warm-up
                rss_start = {
                    name: rss_kib(p.popen.pid) for name, p in (("gateway", gateway), ("worker", worker))
                }  # type: ignore[union-attr]
            body = {
                "resource": "Call/",
                "params": {"from": "1", "to": "2", "answer_url": "https://a"},
                "metadata": {"n": n},
            }
            response = await client.post(base + "/v1/requests", json=body, headers=auth)
            assert response.status_code == 202, response.text
            api_ids.append(response.json()["api_id"])
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        try:
            await wait_until(lambda: len(flaky.accepted) >= len(api_ids), timeout=120)
        except AssertionError:
            failed = await client.get(
                base + "/v1/deliveries", params={"status": "failed", "limit": 20}, headers=auth
            )
            subs = await client.get(base + "/v1/subscriptions", headers=auth)
            raise AssertionError(
                f"{len(flaky.accepted)} of {len(api_ids)} delivered; failed: {failed.json()['meta']}; "
                f"{failed.json()['objects'][:2]}; subscriptions: {subs.json()['objects']}"
            ) from None
        rss_end = {name: rss_kib(p.popen.pid) for name, p in (("gateway", gateway), ("worker", worker))}  # type: ignore[union-attr]
        pending = await client.get(
            base + "/v1/requests", params={"status": "pending", "limit": 1}, headers=auth
        )
        assert pending.json()["meta"]["total_count"] == 0
    # Every record of this run has expired by now: dedup marks and nonces, kept in per-period
    # buckets, live at least their TTL and at most twice it (lua/lib/seen.lua).
    await asyncio.sleep(2 * int(ttl) + 1)
    await redis.execute_command("MEMORY", "PURGE")
    after = (await redis.info("memory"))["used_memory"]
    leftovers = {}
    async for key in redis.scan_iter(count=1000):
        kind = key.split(":")[1] if ":" in key else key
        leftovers[kind] = leftovers.get(kind, 0) + (await redis.memory_usage(key) or 0)
    await redis.aclose()
    flaky_server.stop()
    report(
        "load held",
        seconds=seconds,
        submits=len(api_ids),
        delivered=len(flaky.accepted),
        refused_then_retried=flaky.refused,
        rss_start_kib=rss_start,
        rss_end_kib=rss_end,
        redis_baseline=baseline,
        redis_after_ttl=after,
        leftover_bytes_by_kind=leftovers,
    )
    assert len(flaky.accepted) == len(api_ids)
    for name, start in rss_start.items():
        assert rss_end[name] < start * 1.3 + 10_000, (name, start, rss_end[name])
    # Every per-request, per-callback and per-event record has expired; what is left is bounded
    # bookkeeping (lazily trimmed indexes, subscriptions; the worker keeps no arq job results).
    for kind in ("req", "evt", "dlv", "dlvlog", "dedup", "nonce", "link", "reqevents", "state", "park"):
        assert kind not in leftovers, (kind, leftovers)
    # A finished request's entry in its timeout's due queue stays until its deadline (the sweep
    # skips it then): ~19 B per request submitted within the last timeout, not per pending one.
    due = leftovers.pop("due", 0)
    assert due < len(api_ids) * 40 + 4096, (due, len(api_ids))
    assert sum(leftovers.values()) < 256 * 1024, leftovers
    for log in logs.iterdir():
        errors = [line for line in log.read_text().splitlines() if '"level": "error"' in line]
        assert errors == [], (log.name, errors[:3])
        assert log.read_text().count('"level": "warning"') == 0, log.name
    assert AUTH_ID  # the run used the sandbox's credentials, nothing else
