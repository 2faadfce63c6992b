"""Graceful shutdown with real processes: SIGTERM to a worker mid-stream loses nothing, and SIGTERM
to `serve` lets a request in flight complete."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.procs import API_KEY, TOKEN, Procs, free_port, signed_callback
from tests.support.receiver import WebhookReceiver, wait_until
from tests.support.servers import ServerThread
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis
from tooling.sandbox import create_sandbox

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
N = 24


async def _submit_and_call_back(client: httpx.AsyncClient, api: str, hook: str) -> list[str]:
    ids = []
    for _ in range(N):
        body = {"resource": "Call/", "params": CALL, "targets": [{"type": "webhook", "url": hook}]}
        response = await client.post(api + "/v1/requests", json=body, headers=AUTH)
        assert response.status_code == 202, response.text
        ids.append(response.json()["api_id"])
    for api_id in ids:
        answer = await client.post(api + "/callbacks/plivo", **signed_callback(api, {"api_id": api_id}))
        assert answer.status_code == 200
    return ids


@pytest.mark.parametrize(
    ("grace", "hang"),
    [("10", 0.3), ("0.2", 1.5)],
    ids=["in-flight-finish", "grace-cut-retried-elsewhere"],
)
async def test_sigterm_to_a_worker_mid_stream_loses_nothing(
    redis_server: EmbeddedRedis, postgres_server: EmbeddedPostgres, tmp_path: Path, grace: str, hang: float
) -> None:
    receiver = WebhookReceiver(hang=hang)
    hooks = ServerThread(receiver.app()).start()
    sandbox = ServerThread(create_sandbox("MAPROCTEST0123456789", TOKEN)).start()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    procs = Procs.build(
        tmp_path,
        redis_server.url,
        port,
        database=postgres_server.url(),
        PLIVO_API_URL=sandbox.url,
        GATEWAY_DELIVERY_TIMEOUT=3,
        LOG_LEVEL="INFO",
    )
    try:
        procs.serve(port)
        procs.env["WORKER_SHUTDOWN_GRACE"] = grace
        victim = procs.worker()
        procs.env["WORKER_SHUTDOWN_GRACE"] = "10"
        procs.worker()

        def both_started() -> bool:
            # Else, on a loaded host, the SIGTERM can reach a victim still importing (no handler
            # yet: killed, -15) while the other worker does all the work.
            return all('"worker_started"' in log.read_text() for log in procs.logs[1:3])

        await wait_until(both_started, timeout=30)
        async with httpx.AsyncClient(timeout=20) as client:
            (await client.post(sandbox.url + "/_sandbox/config", json={"delay": 3600})).raise_for_status()
            api_ids = await _submit_and_call_back(client, api, hooks.url)
            await wait_until(lambda: len(receiver.received) >= 4, timeout=10)
            victim.send_signal(signal.SIGTERM)
            started = time.monotonic()
            await asyncio.to_thread(victim.wait, 20)
            stopped_in = time.monotonic() - started
            await wait_until(
                lambda: {json.loads(r.body)["api_id"] for r in receiver.received} == set(api_ids), timeout=25
            )
    finally:
        procs.close()
        hooks.stop()
        sandbox.stop()
    assert victim.returncode == 0
    assert stopped_in < float(grace) + hang + 3
    stopped = [json.loads(x) for x in procs.logs[1].read_text().splitlines() if '"worker_stopped"' in x]
    assert len(stopped) == 1
    if grace == "10":
        assert stopped[0]["jobs_cut_off"] == 0
    # Every event arrived; one cut off mid-send may arrive twice, with the same webhook-id.
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(set(ids)) == N


async def test_sigterm_to_serve_lets_the_request_in_flight_complete(
    redis_server: EmbeddedRedis, postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    sandbox = ServerThread(create_sandbox("MAPROCTEST0123456789", TOKEN)).start()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    procs = Procs.build(
        tmp_path,
        redis_server.url,
        port,
        database=postgres_server.url(),
        PLIVO_API_URL=sandbox.url,
        LOG_LEVEL="INFO",
    )
    try:
        server = procs.serve(port)
        async with httpx.AsyncClient(timeout=20) as client:
            (await client.post(sandbox.url + "/_sandbox/config", json={"delay": 3600})).raise_for_status()
            body = {"resource": "Call/", "params": CALL}
            api_id = (await client.post(api + "/v1/requests", json=body, headers=AUTH)).json()["api_id"]
            # A long poll: held open for 2 s because the request stays pending.
            held = asyncio.create_task(client.get(f"{api}/v1/requests/{api_id}?wait=2", headers=AUTH))
            await asyncio.sleep(0.5)
            server.send_signal(signal.SIGTERM)
            response = await held
            assert response.status_code == 200 and response.json()["status"] == "pending"
            await asyncio.to_thread(server.wait, 15)
            # uvicorn re-raises the signal it handled once shut down: -SIGTERM after a clean exit.
            assert server.returncode in (0, -signal.SIGTERM)
            assert '"error"' not in procs.logs[0].read_text()
            with pytest.raises(httpx.ConnectError):
                await client.get(api + "/healthz")
    finally:
        procs.close()
        sandbox.stop()


async def test_a_worker_whose_redis_is_gone_still_stops_cleanly(
    tmp_path: Path, postgres_server: EmbeddedPostgres
) -> None:
    # Redis stopped first (a host shutdown, a bench tearing down): SIGTERM still ends the worker
    # with status 0, its HTTP client closed, no traceback.
    server = EmbeddedRedis().start()
    procs = Procs.build(tmp_path, server.url, free_port(), database=postgres_server.url(), LOG_LEVEL="INFO")
    try:
        worker = procs.worker()

        def started() -> bool:
            return '"worker_started"' in procs.logs[0].read_text()

        await wait_until(started, timeout=15)
        server.stop()
        await asyncio.sleep(1.0)
        worker.send_signal(signal.SIGTERM)
        await asyncio.to_thread(worker.wait, 20)
    finally:
        procs.close()
        server.stop()
    output = procs.logs[0].read_text()
    assert worker.returncode == 0, output[-2000:]
    assert "Traceback" not in output and "Unclosed client session" not in output
    assert '"worker_stopped"' in output
