"""Fixtures of the reliability suite: a private Redis with AOF, a webhook receiver, processes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.store import INBOX_GROUP
from tests.reliability.harness import Proc, Sender, base_env, gateway_proc, ledger, wait_http, worker_proc
from tests.support.receiver import WebhookReceiver, wait_until
from tests.support.servers import ServerThread
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis, free_port


@dataclass
class Rig:
    redis: EmbeddedRedis
    postgres: EmbeddedPostgres
    receiver: WebhookReceiver
    receiver_server: ServerThread
    prefix: str
    public_url: str
    procs: list[Proc]
    _ids: set[str] = field(default_factory=set)  # distinct webhook-ids among the first _counted
    _counted: int = 0

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(self.redis.url, self.postgres.url(), self.public_url, self.prefix, **extra)

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

    async def all_sent(
        self, sending: asyncio.Task[None], sender: Sender, ids: list[str], timeout: float = 300
    ) -> None:
        """Wait for the sender to have every callback acknowledged (it retries each refused one up
        to 60 times, backing off); if the gateway keeps refusing them, fail saying what it
        answered and where the requests are, instead of waiting for hours."""
        try:
            await asyncio.wait_for(asyncio.shield(sending), timeout)
        except TimeoutError:
            sending.cancel()
            unacked = [i for i in ids if i not in sender.acked]
            print(f"sender: {len(sender.acked)} acknowledged, failures {dict(sender.failures)}")
            print(await self.explain_missing(unacked))
            raise AssertionError(f"{len(unacked)} callbacks still refused after {timeout:g} s") from None

    async def all_delivered(self, ids: list[str], timeout: float = 120) -> None:
        """Wait until every request's event arrived; if some never do, say where they are stuck
        (their request, events, delivery records, leases, queued jobs, the inbox) before failing."""
        try:
            await wait_until(lambda: self.delivered() == len(ids), timeout=timeout)
        except AssertionError:
            print(await self.explain_missing(ids))
            raise

    async def explain_missing(self, ids: list[str], limit: int = 5) -> str:
        missing = [i for i in ids if i not in ledger(self.receiver.received)["per_api"]]
        lines = [f"{len(missing)} of {len(ids)} never delivered; the first {min(limit, len(missing))}:"]
        redis = Redis.from_url(self.redis.url, decode_responses=True)
        try:
            p = self.prefix
            held = (await redis.xpending(p + "inbox", INBOX_GROUP))["pending"]
            lines.append(f"inbox: length {await redis.xlen(p + 'inbox')}, in workers' hands {held}")
            lines.append(f"arq queue: {await redis.zcard(p + 'queue')} jobs")
            for api_id in missing[:limit]:
                lines.append(f"request {api_id}: {await redis.hgetall(p + 'req:' + api_id)}")
                for event_id in await redis.lrange(p + "reqevents:" + api_id, 0, -1):
                    for dlv in await redis.smembers(p + "evtdlv:" + event_id):
                        record = await redis.hgetall(p + "dlv:" + dlv)
                        lease = await redis.pttl(p + "lease:" + dlv)
                        jobs = [j async for j in redis.zscan_iter(p + "queue", match=f"*{dlv}*")]
                        lines.append(f"  {event_id} {dlv}: {record} lease_ttl_ms={lease} jobs={jobs}")
        finally:
            await redis.aclose()
        return "\n".join(lines)

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
    postgres = EmbeddedPostgres().start()  # its own: a test may stop and start it
    receiver = WebhookReceiver()
    server = ServerThread(receiver.app()).start()
    port = free_port()
    prefix = f"rel{uuid.uuid4().hex[:6]}:"
    built = Rig(redis, postgres, receiver, server, prefix, f"http://127.0.0.1:{port}", [])
    built.public_port = port  # type: ignore[attr-defined]
    yield built
    for proc in built.procs:
        proc.kill()
    server.stop()
    postgres.cleanup()
    redis.cleanup()
