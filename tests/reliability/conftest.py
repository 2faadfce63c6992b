"""Fixtures of the reliability suite: a private Redis with AOF, a webhook receiver, processes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.embedded_redis import EmbeddedRedis, free_port
from tests.reliability.harness import Proc, base_env, gateway_proc, wait_http, worker_proc
from tests.support.receiver import WebhookReceiver
from tests.support.servers import ServerThread


@dataclass
class Rig:
    redis: EmbeddedRedis
    receiver: WebhookReceiver
    receiver_server: ServerThread
    prefix: str
    public_url: str
    procs: list[Proc]
    _ids: set[str] = field(default_factory=set)  # distinct webhook-ids among the first _counted
    _counted: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(self.redis.url, self.public_url, self.prefix, **extra)

    async def gateway(self, port: int | None = None, log_path: Path | None = None, **extra: str) -> Proc:
        proc = gateway_proc(self.env(**extra), port)
        proc.log_path = log_path
        proc.start()
        self.procs.append(proc)
        await wait_http(f"http://127.0.0.1:{proc.port}/healthz")
        return proc

    def worker(self, log_path: Path | None = None, **extra: str) -> Proc:
        proc = worker_proc(self.env(**extra))
        proc.log_path = log_path
        proc.start()
        self.procs.append(proc)
        return proc

    @property
    def hook(self) -> str:
        return self.receiver_server.url + "/hook"

    def delivered(self) -> int:
        """Distinct events received so far. Polled every 20 ms while tens of thousands arrive, in
        the process that also sends the callbacks and runs the receiver: it only looks at what
        arrived since the last call (parsing every body on each poll starved the sender: 4,000
        callbacks a minute instead of 20,000 on a slow host). ``ledger`` stays the final check."""
        received = self.receiver.received
        if len(received) < self._counted:  # the receiver was reset
            self._ids, self._counted = set(), 0
        for r in received[self._counted :]:
            self._ids.add(r.headers.get("webhook-id"))
        self._counted = len(received)
        return len(self._ids)


@pytest.fixture
def redis_dir(tmp_path: Path) -> str:
    return str(tmp_path)


@pytest.fixture
async def rig(redis_dir: str, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    fsync = getattr(request, "param", "always")
    redis = EmbeddedRedis(appendonly=True, appendfsync=fsync, directory=redis_dir).start()
    receiver = WebhookReceiver()
    server = ServerThread(receiver.app()).start()
    port = free_port()
    built = Rig(redis, receiver, server, f"rel{uuid.uuid4().hex[:6]}:", f"http://127.0.0.1:{port}", [])
    built.public_port = port  # type: ignore[attr-defined]
    yield built
    for proc in built.procs:
        proc.kill()
    server.stop()
    redis.cleanup()
