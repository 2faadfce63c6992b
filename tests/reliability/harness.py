"""Real processes for fault injection: gateway servers and workers as subprocesses, a Plivo-like
sender that retries what was not acknowledged, and a ledger of what the subscriber received."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from redis.asyncio import Redis

from gateway.domain.signing import sign_v3
from gateway.store import NewRequest, Store
from tooling.embedded_redis import die_with_parent, free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "reliability-token-0123456789"
AUTH_ID = "MARELIABILITY0000000"
API_KEY = "reliability-api-key"


def base_env(redis_url: str, database_url: str, public_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "PLIVO_", "GATEWAY_", "WORKER_", "DATABASE_"))
    }
    env.update(
        {
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "GATEWAY_HISTORY_DELAY": "0.1",
            "GATEWAY_KEY_PREFIX": prefix,
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN": TOKEN,
            "PLIVO_API_URL": "http://127.0.0.1:9",
            "GATEWAY_PUBLIC_URL": public_url,
            "GATEWAY_API_KEYS": API_KEY,
            "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
            "GATEWAY_RETRY_SCHEDULE": "0,0.5,1,1,2,2,3",
            "GATEWAY_OVERLOAD_FLOOR": "0.5",
            "GATEWAY_DELIVERY_TIMEOUT": "2",
            "WORKER_CLAIM_IDLE": "2",
            "WORKER_POLL_DELAY": "0.02",
            "WORKER_SWEEP_INTERVAL": "0.2",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    args: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    port: int | None = None
    log_path: Path | None = None

    def start(self) -> Proc:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("ab") if self.log_path else subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        return self

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def gateway_proc(env: dict[str, str], port: int | None = None) -> Proc:
    port = port or free_port()
    proc = Proc(["serve", "--port", str(port)], env, port=port)
    return proc


def worker_proc(env: dict[str, str]) -> Proc:
    return Proc(["worker"], env)


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url, timeout=1)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


async def seed_requests(redis_url: str, prefix: str, count: int, hook: str) -> list[str]:
    """Pending requests written straight into the store, each with one webhook target."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = Store(redis, prefix, dedup_ttl=3600, retention=3600, grace=300)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    target = [{"type": "webhook", "url": hook, "method": "POST"}]
    for start in range(0, count, 200):
        await asyncio.gather(
            *(
                store.save_request(
                    NewRequest(i, "POST", "Call/", {}, {"i": n}, target, 600, uuid.uuid4().hex)
                )
                for n, i in enumerate(ids[start : start + 200], start)
            )
        )
    await redis.aclose()
    return ids


@dataclass
class Sender:
    """Sends one signed callback per api_id like Plivo: retries whatever got no 200."""

    public_url: str
    targets: list[str]  # base URLs of live gateways; a dead one is simply tried and fails
    acked: set[str] = field(default_factory=set)
    attempts: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def _request(self, api_id: str) -> tuple[bytes, dict[str, str]]:
        params = {"api_id": api_id, "message": "call fired", "request_uuid": f"r-{api_id}"}
        nonce = str(secrets.randbelow(10**20))
        signature = sign_v3("POST", self.public_url + "/callbacks/plivo", params, nonce, TOKEN)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Plivo-Signature-V3": signature,
            "X-Plivo-Signature-V3-Nonce": nonce,
        }
        return urlencode(params).encode(), headers

    async def send_all(self, api_ids: list[str], *, concurrency: int = 16, max_tries: int = 60) -> None:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=5) as client:

            async def one(n: int, api_id: str) -> None:
                async with sem:
                    for attempt in range(max_tries):
                        body, headers = self._request(api_id)  # fresh nonce per attempt
                        base = self.targets[(n + attempt) % len(self.targets)]
                        self.attempts += 1
                        try:
                            response = await client.post(
                                base + "/callbacks/plivo", content=body, headers=headers
                            )
                        except httpx.HTTPError as exc:
                            self.failures[type(exc).__name__] += 1
                        else:
                            if response.status_code == 200:
                                self.acked.add(api_id)
                                return
                            self.failures[str(response.status_code)] += 1
                        await asyncio.sleep(min(0.1 * 2**attempt, 1.0))

            await asyncio.gather(*(one(n, a) for n, a in enumerate(api_ids)))


def ledger(received: list[Any]) -> dict[str, Any]:
    """What the subscriber saw: distinct events, redeliveries, and ids per api_id."""
    ids = [r.headers.get("webhook-id") for r in received]
    per_api: dict[str, set[str]] = {}
    for r in received:
        event = json.loads(r.body)
        per_api.setdefault(event["api_id"], set()).add(event["id"])
    counts = Counter(ids)
    return {
        "received": len(ids),
        "distinct": len(counts),
        "redelivered": sum(c - 1 for c in counts.values()),
        "per_api": per_api,
    }


def report(name: str, **figures: Any) -> None:
    """Print the scenario's figures (pytest -s shows them; docs/reliability.md quotes them)."""
    print(f"\n[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
