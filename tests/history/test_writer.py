"""The history writer process (GATEWAY_HISTORY_WRITER=process, the default): the worker's child that
copies to PostgreSQL. It is started with the worker, restarted when it dies, stopped with the
worker, never sees a secret on its command line, and its batches count in the worker's metrics."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.infra import metrics
from tests.conftest import Stack
from tests.history.test_archive import archived, db, submit_message
from tests.support.receiver import wait_until

pytestmark = pytest.mark.history_writer_process


def writers() -> dict[int, str]:
    """This test process's writer children: pid -> command line."""
    me = str(os.getpid())
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = stat.rsplit(")", 1)[1].split()[1]
        if ppid == me and "workers.writer" in cmdline:
            found[int(entry.name)] = cmdline
    return found


def rows_counted() -> float:
    return float(metrics.HISTORY_ROWS._value.get())


async def copied(stack: Stack, api_id: str) -> bool:
    conn = await db(stack)
    try:
        return await conn.fetchval("SELECT count(*) FROM requests WHERE api_id = $1", api_id) == 1
    finally:
        await conn.close()


async def test_the_worker_runs_one_writer_child_and_counts_its_rows(stack: Stack, redis: Redis) -> None:
    assert stack.settings.GATEWAY_HISTORY_WRITER == "process"
    await wait_until(lambda: len(writers()) == 1)
    (cmdline,) = writers().values()
    # Its settings came down a pipe: no secret on its command line.
    assert stack.settings.DATABASE_URL is not None
    assert stack.settings.DATABASE_URL.get_secret_value() not in cmdline
    assert stack.settings.PLIVO_AUTH_TOKEN.get_secret_value() not in cmdline
    before = rows_counted()
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: archived(stack, redis))
    assert await copied(stack, api_id)
    # request + 4 events + 4 deliveries + 4 attempts, reported by the child to the worker's metrics
    await wait_until(lambda: rows_counted() - before >= 13)


async def test_a_killed_writer_is_restarted_and_nothing_is_lost(stack: Stack, redis: Redis) -> None:
    await wait_until(lambda: len(writers()) == 1)
    (first,) = writers()
    os.kill(first, signal.SIGKILL)
    api_id = await submit_message(stack)  # changes while no writer runs
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: len(writers()) == 1 and first not in writers(), timeout=10)
    await wait_until(lambda: archived(stack, redis))
    assert await copied(stack, api_id)


async def test_stopping_the_worker_stops_its_writer(stack_factory: Any) -> None:
    stack: Stack = await stack_factory()
    await wait_until(lambda: len(writers()) == 1)
    (pid,) = writers()
    assert stack.worker is not None
    stack.worker.stop()
    await wait_until(lambda: not Path(f"/proc/{pid}").exists() or pid not in writers(), timeout=10)
    assert writers() == {}


async def test_inline_runs_no_child_and_still_copies(stack_factory: Any, redis: Redis) -> None:
    stack: Stack = await stack_factory(GATEWAY_HISTORY_WRITER="inline")
    api_id = await submit_message(stack)
    await wait_until(lambda: len(stack.receiver.on("/hook")) == 4)
    await wait_until(lambda: archived(stack, redis))
    assert await copied(stack, api_id)
    assert writers() == {}
