"""Two `serve` processes and two `worker` processes on one Redis: the same guarantees as one of each.

Every callback is sent to both API processes (Plivo retrying against another replica): exactly one
event per callback, every delivery made. The processes log JSON to files, which are then searched
for the configured secrets (none may appear) and for one line per request/callback/delivery.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.support.procs import API_KEY, TOKEN, WEBHOOK_SECRET, Procs, free_port, signed_callback
from tests.support.receiver import WebhookReceiver, wait_until
from tests.support.servers import ServerThread
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis
from tooling.sandbox import create_sandbox

N = 30
CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


async def test_two_apis_two_workers_one_event_per_callback_and_no_secret_in_logs(
    redis_server: EmbeddedRedis, postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    hooks = ServerThread(receiver.app()).start()
    sandbox = ServerThread(create_sandbox("MAPROCTEST0123456789", TOKEN)).start()
    ports = [free_port(), free_port()]
    procs = Procs.build(
        tmp_path, redis_server.url, ports[0], database=postgres_server.url(), PLIVO_API_URL=sandbox.url
    )
    try:
        for port in ports:
            procs.serve(port)
        procs.worker()
        procs.worker()
        apis = [f"http://127.0.0.1:{p}" for p in ports]
        auth = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(timeout=20) as client:
            # The sandbox must not call back by itself: this test sends the callbacks.
            (await client.post(sandbox.url + "/_sandbox/config", json={"delay": 3600})).raise_for_status()
            api_ids = []
            for i in range(N):
                body = {
                    "resource": "Call/",
                    "params": CALL,
                    "targets": [{"type": "webhook", "url": hooks.url}],
                }
                response = await client.post(apis[i % 2] + "/v1/requests", json=body, headers=auth)
                assert response.status_code == 202, response.text
                api_ids.append(response.json()["api_id"])
            answers = await asyncio.gather(
                *(
                    client.post(
                        api + "/callbacks/plivo", **signed_callback(apis[0], {"api_id": a, "s": "ok"})
                    )
                    for a in api_ids
                    for api in apis
                )
            )
            assert [r.status_code for r in answers] == [200] * (2 * N)
            forged = await client.post(apis[1] + "/callbacks/plivo", data={"api_id": api_ids[0]})
            assert forged.status_code == 403
            await wait_until(lambda: len(receiver.received) >= N, timeout=20)
            await asyncio.sleep(1.0)  # anything extra would arrive now
            events = [json.loads(r.body) for r in receiver.received]
            assert len(events) == N
            assert sorted(e["api_id"] for e in events) == sorted(api_ids)
            assert len({r.headers["webhook-id"] for r in receiver.received}) == N
            for i, api_id in enumerate(api_ids):
                status = await client.get(f"{apis[(i + 1) % 2]}/v1/requests/{api_id}", headers=auth)
                assert status.json()["status"] == "completed"
    finally:
        procs.close()
        hooks.stop()
        sandbox.stop()
    logs = procs.all_logs()
    for secret in (TOKEN, API_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_")):
        assert secret not in logs
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    by_event: dict[str, list[dict[str, object]]] = {}
    for line in lines:
        by_event.setdefault(str(line.get("event")), []).append(line)
    assert len([x for x in by_event["api_request"] if x["path"] == "/v1/requests"]) == N
    assert {x["api_id"] for x in by_event["submitted"]} == set(api_ids)
    assert len(by_event["callback"]) == 2 * N
    assert sorted(x["outcome"] for x in by_event["callback"]).count("duplicate") == N
    assert {x["event_id"] for x in by_event["delivery"]} == {e["id"] for e in events}
    assert by_event["callback_rejected"][0]["reason"] == "bad_signature"
