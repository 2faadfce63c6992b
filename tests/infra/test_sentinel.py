"""Redis Sentinel failover under load: no callback answered 200 is lost, and the gateway recovers.

Master and two replicas run with AOF ``appendfsync always``; the gateway waits for one replica
(``REDIS_WAIT_REPLICAS=1``) before answering 200, so an acknowledged callback is on a replica when
the master is SIGKILLed. After the failover the promoted replica has the other one as its replica,
so writes are acknowledged again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from gateway.api.app import create_app
from gateway.domain.callbacks import callback_id
from gateway.settings import Settings
from tests.support.procs import signed_callback
from tests.support.receiver import wait_until
from tests.support.sentinel import MASTER, SentinelSetup
from tests.support.servers import LoopThread, ServerThread, bound_socket
from workers.main import run_worker


async def test_failover_loses_no_acknowledged_callback(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    setup = SentinelSetup(tmp_path).start()
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(
        REDIS_URL="redis://ignored:1/0",
        REDIS_SENTINELS=f"127.0.0.1:{setup.sentinel_port}",
        REDIS_SENTINEL_MASTER=MASTER,
        REDIS_WAIT_REPLICAS=1,
        REDIS_WAIT_TIMEOUT=0.5,
        GATEWAY_PUBLIC_URL=url,
        GATEWAY_NONCE_WINDOW=0,
        WORKER_HEARTBEAT_INTERVAL=0.2,
        WORKER_HEARTBEAT_TTL=2,
        WORKER_CLAIM_IDLE=1,  # entries read before the failover, not acked, are taken over soon
    )
    token = settings.PLIVO_AUTH_TOKEN.get_secret_value()
    gateway = ServerThread(create_app(settings), sock).start()
    worker = LoopThread(lambda stop: run_worker(settings, stop)).start()
    acked: set[str] = set()
    answers: dict[int, int] = {}
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def send(n: int) -> int:
                params: dict[str, Any] = {"CallUUID": f"call-{n}", "CallStatus": "completed", "n": str(n)}
                response = await client.post(url + "/callbacks/plivo", **signed_callback(url, params, token))
                answers[response.status_code] = answers.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    acked.add(callback_id("", params))
                return response.status_code

            for n in range(50):
                assert await send(n) == 200
            n = 50
            old = setup.master_address()
            setup.kill_master()
            killed_at = time.monotonic()
            # Keep sending through the failover until the gateway answers 200 again, for a while.
            recovered = 0
            while recovered < 50 and time.monotonic() - killed_at < 25:
                n += 1
                code = await send(n)
                if code == 200 and setup.master_address() != old:
                    recovered += 1
                await asyncio.sleep(0.01)
            assert recovered == 50, answers
            new = setup.master_address()
            assert new != old
            master = Redis(host=new[0], port=new[1], decode_responses=True)
            prefix = settings.GATEWAY_KEY_PREFIX

            async def all_correlated() -> bool:
                # The worker (reconnected through the sentinel) parks every callback (no request).
                return int(await master.zcard(prefix + "unmatched")) >= len(acked)

            await wait_until(all_correlated, timeout=20)
            entries = []
            for key in await master.keys(prefix + "park:*"):
                entries += await master.lrange(key, 0, -1)  # type: ignore[misc]
            stored = {json.loads(e)["cb"] for e in entries}
            assert acked <= stored, f"lost {len(acked - stored)} acknowledged callbacks"
            ready = await client.get(url + "/readyz")
            assert ready.status_code == 200, ready.text
            await master.aclose()
    finally:
        worker.stop()
        gateway.stop()
        setup.stop()
