"""Fixtures: a private redis-server for the session, and the whole stack on loopback per test."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from gateway.api.app import create_app
from gateway.settings import Settings
from tests.support.receiver import WebhookReceiver
from tests.support.servers import LoopThread, ServerThread, bound_socket
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis
from tooling.sandbox import SandboxState, create_sandbox
from workers.main import run_worker

AUTH_ID = "MAODUTEST0123456789A"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long", action="store_true", default=False, help="run the reliability suite at full size"
    )


LONG_TIMEOUT_S = 1800  # the full-size soak alone loads for 10 minutes


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """At full size (``--long``) the reliability tests outlast the 120 s per-test timeout of the
    everyday run; that timeout stays as it is for everything else."""
    if not config.getoption("--long"):
        return
    for item in items:
        if "reliability" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def make_settings(
    redis_server: EmbeddedRedis, postgres_server: EmbeddedPostgres, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    # Each test its own schema (created by the first migration), as its own Redis key prefix.
    database_url = postgres_server.url() + "?search_path=" + prefix.rstrip(":")
    writer_process = request.node.get_closest_marker("history_writer_process") is not None

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": database_url,
            "GATEWAY_KEY_PREFIX": prefix,
            "GATEWAY_HISTORY_DELAY": 0.02,
            # The default, a writer child per worker, where a test is about it (tests/history, and
            # every test that runs the CLI's worker); inline elsewhere (see pyproject's markers).
            "GATEWAY_HISTORY_WRITER": "process" if writer_process else "inline",
            "PLIVO_AUTH_ID": AUTH_ID,
            "PLIVO_AUTH_TOKEN": "sandbox-token-" + "x" * 20,
            "GATEWAY_API_KEYS": "test-key-1234567890",
            "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": True,
            "GATEWAY_RETRY_SCHEDULE": "0,0.2,0.4",
            "GATEWAY_OVERLOAD_FLOOR": 0.2,
            "WORKER_POLL_DELAY": 0.02,
            "LOG_LEVEL": "WARNING",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@dataclass
class Stack:
    settings: Settings
    gateway: ServerThread
    sandbox: ServerThread
    sandbox_state: SandboxState
    receiver: WebhookReceiver
    receiver_server: ServerThread
    worker: LoopThread | None
    client: httpx.AsyncClient
    extra_gateways: list[ServerThread] = field(default_factory=list)
    workers: list[LoopThread] = field(default_factory=list)

    @property
    def api_key(self) -> str:
        return next(iter(self.settings.api_keys))

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def hook_url(self, path: str = "/hook") -> str:
        return self.receiver_server.url + path

    async def submit(self, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        return await self.client.post(
            self.gateway.url + "/v1/requests", json=body, headers=self.auth, **kwargs
        )

    async def status(self, api_id: str) -> dict[str, Any]:
        response = await self.client.get(f"{self.gateway.url}/v1/requests/{api_id}", headers=self.auth)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def configure_sandbox(self, **config: Any) -> None:
        response = await self.client.post(self.sandbox.url + "/_sandbox/config", json=config)
        response.raise_for_status()

    async def history_ready(self, timeout: float = 10.0) -> None:
        """Until the API process is connected to PostgreSQL (it connects in the background)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = (await self.client.get(self.gateway.url + "/readyz")).json()
            if ready.get("history") == "up" or ready.get("redis") == "down":  # (then it cannot say)
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the API did not connect to PostgreSQL in time")

    def add_gateway(self) -> ServerThread:
        """A second gateway process-alike on the same Redis and sandbox (its own port)."""
        extra = ServerThread(create_app(self.settings)).start()
        self.extra_gateways.append(extra)
        return extra

    def start_worker(self) -> LoopThread:
        settings = self.settings
        thread = LoopThread(lambda stop: run_worker(settings, stop)).start()
        self.worker = thread
        self.workers.append(thread)
        return thread


@pytest.fixture
async def stack_factory(
    make_settings: Callable[..., Settings], redis: Redis
) -> AsyncIterator[Callable[..., Any]]:
    stacks: list[Stack] = []

    async def build(*, worker: bool = True, **overrides: Any) -> Stack:
        receiver = WebhookReceiver()
        receiver_server = ServerThread(receiver.app()).start()
        sandbox_sock, gateway_sock = bound_socket(), bound_socket()
        sandbox_url = f"http://127.0.0.1:{sandbox_sock.getsockname()[1]}"
        gateway_url = f"http://127.0.0.1:{gateway_sock.getsockname()[1]}"
        settings = make_settings(
            **{"PLIVO_API_URL": sandbox_url, "GATEWAY_PUBLIC_URL": gateway_url, **overrides}
        )
        token = settings.PLIVO_AUTH_TOKEN.get_secret_value()
        sandbox_app = create_sandbox(settings.PLIVO_AUTH_ID, token)
        sandbox = ServerThread(sandbox_app, sandbox_sock).start()
        gateway = ServerThread(create_app(settings), gateway_sock).start()
        stack = Stack(
            settings=settings,
            gateway=gateway,
            sandbox=sandbox,
            sandbox_state=sandbox_app.state.sandbox,
            receiver=receiver,
            receiver_server=receiver_server,
            worker=None,
            client=httpx.AsyncClient(timeout=30),
        )
        if worker:
            stack.start_worker()
        stacks.append(stack)
        if "DATABASE_URL" not in overrides:  # the session's PostgreSQL: wait until the API has it
            await stack.history_ready()
        return stack

    yield build

    def parts(stack: Stack) -> list[Any]:
        return [*stack.workers, stack.gateway, stack.sandbox, stack.receiver_server, *stack.extra_gateways]

    # Signal everything first, then wait: the components shut down in parallel.
    for stack in stacks:
        for part in parts(stack):
            part.signal_stop()
    for stack in stacks:
        for part in parts(stack):
            part.stop()
        await stack.client.aclose()


@pytest.fixture
async def stack(stack_factory: Callable[..., Any]) -> Stack:
    built: Stack = await stack_factory()
    return built


def random_token() -> str:
    return secrets.token_urlsafe(24)
