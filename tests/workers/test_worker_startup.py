"""A worker and its startup: ready (heartbeat, /readyz) only once its arq startup hook finished, and a
stop that arrives while the hook runs ends the worker promptly with nothing left behind.

The startup is held open through ``run_worker``'s ``during_startup`` seam, so each test knows that
the stop (or the check) happens while the hook is in progress: no sleeping and hoping.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from gateway.settings import Settings
from tests.conftest import Stack
from tests.support.receiver import wait_until
from tests.support.servers import LoopThread
from workers.main import run_worker

FAST_BEAT = {"WORKER_HEARTBEAT_INTERVAL": 0.1, "WORKER_HEARTBEAT_TTL": 5}
Hold = Callable[[asyncio.Event], Awaitable[None]]


class HeldWorker:
    """``run_worker`` in its own thread and loop, its startup hook running ``hold`` (given the
    worker's stop event) once the hook's clients exist and before its consumer starts. Records
    which tasks its loop still had running when ``run_worker`` ended."""

    def __init__(self, stack: Stack, hold: Hold) -> None:
        self.settings: Settings = stack.settings
        self.hold = hold
        self.entered = threading.Event()
        self.leftover: list[str] | None = None
        self.error: BaseException | None = None
        self.loop = LoopThread(self._run)
        stack.workers.append(self.loop)  # the fixture stops it whatever happens here

    async def _run(self, stop: asyncio.Event) -> None:
        async def during_startup() -> None:
            self.entered.set()
            await self.hold(stop)

        try:
            await run_worker(self.settings, stop, during_startup=during_startup)
        except Exception as exc:  # kept here: the fixture's stop() would raise it at teardown
            self.error = exc
        finally:
            me = asyncio.current_task()
            running = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            self.leftover = sorted(t.get_coro().__qualname__ for t in running)

    async def start(self) -> HeldWorker:
        self.loop.start()
        assert await asyncio.to_thread(self.entered.wait, 10), "startup never reached the seam"
        return self

    async def ended(self, timeout: float) -> bool:
        await asyncio.to_thread(self.loop.thread.join, timeout)
        return not self.loop.thread.is_alive()


async def readiness(stack: Stack) -> tuple[int, str]:
    response = await stack.client.get(stack.gateway.url + "/readyz")
    return response.status_code, response.json()["worker"]


async def heartbeats(redis: Redis, stack: Stack) -> list[Any]:
    members: list[Any] = await redis.zrange(stack.settings.GATEWAY_KEY_PREFIX + "workers", 0, -1)
    return members


async def test_a_worker_is_not_ready_until_its_startup_finished(
    stack_factory: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_factory(worker=False, **FAST_BEAT)
    release = threading.Event()

    async def hold(stop: asyncio.Event) -> None:
        while not release.is_set():
            await asyncio.sleep(0.01)

    worker = await HeldWorker(stack, hold).start()
    await asyncio.sleep(0.5)  # five heartbeat intervals with the startup unfinished
    assert await readiness(stack) == (503, "down")
    assert await heartbeats(redis, stack) == []
    release.set()

    async def ready() -> bool:
        return (await readiness(stack))[0] == 200

    await wait_until(ready, timeout=10)
    worker.loop.stop()
    assert await readiness(stack) == (503, "down")
    assert worker.leftover == []


async def test_a_stop_during_startup_ends_the_worker_promptly_with_nothing_left(
    stack_factory: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_factory(worker=False, **FAST_BEAT)

    async def hold(stop: asyncio.Event) -> None:
        # Startup goes on until the stop has arrived, then stays busy a moment: the incident's
        # stop landed just there. A cancellation reaching this step is lost, the way Python
        # 3.11's asyncio.wait_for (round every redis-py command write) loses one that arrives as
        # the command completes, and startup finishes anyway. That is what hung the worker when
        # a stop cancelled startup; now a stop waits for startup, and nothing is cancelled here.
        await stop.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.2)

    worker = await HeldWorker(stack, hold).start()
    assert await heartbeats(redis, stack) == []
    started = time.monotonic()
    worker.loop.signal_stop()
    assert await worker.ended(timeout=10), "run_worker did not return after a stop during startup"
    assert time.monotonic() - started < 5
    assert worker.error is None
    assert await heartbeats(redis, stack) == []
    assert await readiness(stack) == (503, "down")
    assert worker.leftover == []  # no consumer, sweeps or heartbeat task outlives run_worker


async def test_a_worker_whose_startup_fails_never_appears_ready(
    stack_factory: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_factory(worker=False, **FAST_BEAT)

    async def hold(stop: asyncio.Event) -> None:
        await asyncio.sleep(0.5)  # five heartbeat intervals with the startup unfinished
        raise RuntimeError("startup failed")

    worker = await HeldWorker(stack, hold).start()
    assert await worker.ended(timeout=10)
    assert isinstance(worker.error, RuntimeError)
    assert await heartbeats(redis, stack) == []
    assert await readiness(stack) == (503, "down")
    assert worker.leftover == []
