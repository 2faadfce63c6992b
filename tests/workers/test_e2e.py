"""The whole path on loopback: submit -> sandbox -> callback -> correlate -> webhook + arq job."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook

from tests.conftest import Stack
from tests.support.receiver import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_worker(redis_server) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """A separate process: the user's own arq worker consuming the queue target."""
    queue = f"billing-{uuid.uuid4().hex[:6]}"
    out_list = f"userworker:{queue}"
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "USERWORKER_QUEUE": queue,
        "USERWORKER_LIST": out_list,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "arq", "tests.support.userworker.WorkerSettings"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield queue, out_list
    proc.terminate()
    proc.wait(10)


async def test_submit_callback_fans_out_to_webhook_and_queue(
    stack: Stack, redis: Redis, user_worker: tuple[str, str]
) -> None:
    queue, out_list = user_worker
    response = await stack.submit(
        {
            "resource": "Call/",
            "params": {"from": "14155550100", "to": "14155550123", "answer_url": "https://e/a"},
            "targets": [
                {"type": "webhook", "url": stack.hook_url()},
                {"type": "queue", "queue": queue, "function": "on_result"},
            ],
            "metadata": {"order_id": 42},
            "timeout": 60,
        }
    )
    assert response.status_code == 202, response.text
    body = response.json()
    api_id = body["api_id"]
    assert body == {"api_id": api_id, "message": "async api spawned", "status": "pending"}
    assert response.headers["location"] == f"/v1/requests/{api_id}"

    # The sandbox got our callback_url injected.
    sent = stack.sandbox_state.requests[-1]["params"]
    assert sent["callback_url"].startswith(stack.settings.callback_url + "?cg_ref=")
    assert sent["callback_method"] == "POST"

    await wait_until(lambda: len(stack.receiver.on("/hook")) >= 1)
    await wait_until(lambda: redis.llen(out_list), timeout=15)

    hook = stack.receiver.on("/hook")[0]
    secret = await redis.get(stack.settings.GATEWAY_KEY_PREFIX + "webhook_secret")
    event = Webhook(secret).verify(hook.body, hook.headers)  # raises if the signature is wrong
    assert event["type"] == "request.completed"
    assert event["api_id"] == api_id
    assert event["metadata"] == {"order_id": 42}
    assert event["data"]["api_id"] == api_id
    assert event["data"]["message"] == "call fired"
    assert event["id"].startswith("evt_")
    assert hook.headers["webhook-id"] == event["id"]

    queued = json.loads((await redis.lrange(out_list, 0, -1))[0])
    assert queued == event

    status = await stack.status(api_id)
    assert status["status"] == "completed"
    assert status["metadata"] == {"order_id": 42}
    assert status["result"]["request_uuid"] == event["data"]["request_uuid"]
    assert [e["id"] for e in status["events"]] == [event["id"]]

    # Exactly once per target: nothing more arrives.
    await asyncio.sleep(0.5)
    assert len(stack.receiver.on("/hook")) == 1
    assert await redis.llen(out_list) == 1
