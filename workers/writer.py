"""The history writer process: the archiver (workers.archive) in a process of its own.

Copying to PostgreSQL costs CPU (reading trees out of Redis, building rows, encoding them for
asyncpg) that, on the worker's event loop, delayed deliveries and raised the worker's CPU per
delivery by ~30 % (docs/performance.md). So each worker starts one writer child
(``GATEWAY_HISTORY_WRITER=process``, the default) and keeps it running:

- the worker sends its settings (secrets included) as one JSON line on the child's stdin, never in
  its argv or environment, and keeps stdin open: the child stops when stdin closes, so a worker that
  dies, even by SIGKILL, takes its writer with it;
- the child reports each batch it wrote as a JSON line on its stdout, and the worker counts them in
  its own metrics (``callback_gateway_history_rows`` and ``..._history_write_seconds`` stay on the
  worker's /metrics);
- a child that ends on its own (a crash, the OOM killer) is started again after a back-off;
- the child runs at a lower CPU priority (nice 10): on a busy host the API, the worker and Redis
  come first and history catches up in larger batches (the outbox is bounded, see the backlog).

Two writers (two workers) never conflict: the archive protocol is safe with any number of archivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from pydantic import SecretStr

from gateway.history.client import HistoryClient
from gateway.infra import logs, metrics
from gateway.infra.redis_client import make_redis
from gateway.settings import Settings
from workers.archive import BatchReport, run_archiver_for

log = logs.get("workers.writer")

NICE = 10  # the copy yields the CPU to the hot path (the API, the worker, Redis) when they need it
RESTART_MIN_S = 0.5
RESTART_MAX_S = 30.0
STOP_GRACE_S = 10.0


def settings_line(settings: Settings) -> bytes:
    """``settings`` as the child reads them: one JSON line, secrets revealed (it goes down a pipe)."""

    def reveal(value: object) -> object:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return str(value)

    return json.dumps(settings.model_dump(), default=reveal).encode() + b"\n"


class WriterProcess:
    """The parent's side: start the child, keep it running, count what it reports, stop it."""

    def __init__(self, settings: Settings) -> None:
        self._line = settings_line(settings)
        self._stopping = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="history-writer")

    async def _supervise(self) -> None:
        backoff = RESTART_MIN_S
        while not self._stopping.is_set():
            loop = asyncio.get_running_loop()
            began = loop.time()
            code = await self._run_once()
            if self._stopping.is_set():
                return
            if loop.time() - began > RESTART_MAX_S:
                backoff = RESTART_MIN_S  # it ran a good while: this is not a crash loop
            log.warning("history_writer_exited", code=code, restart_in=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, RESTART_MAX_S)

    async def _run_once(self) -> int | None:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers.writer",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # a terminal's Ctrl-C reaches the worker, which stops it
            )
        except OSError as exc:
            log.warning("history_writer_unstartable", error=f"{type(exc).__name__}: {exc}")
            return None
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(self._line)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        async for line in proc.stdout:
            _count(line)
        return await proc.wait()

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Close the child's stdin (it finishes its batch and ends), then wait; kill it after ``grace``."""
        self._stopping.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, grace)


def _count(line: bytes) -> None:
    try:
        report = json.loads(line)
        rows, seconds = int(report["rows"]), float(report["seconds"])
    except (ValueError, KeyError, TypeError):
        return
    metrics.HISTORY_ROWS.inc(rows)
    metrics.HISTORY_WRITE_SECONDS.observe(seconds)


# The child.


async def _stdin_closed(stop: asyncio.Event) -> None:
    """Set ``stop`` once stdin reaches its end: the worker closed it, or died."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stop.set()


async def _child(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_stdin_closed(stop))
    out = sys.stdout.buffer

    def report(batch: BatchReport) -> None:
        out.write(json.dumps({"rows": batch.rows, "seconds": round(batch.seconds, 6)}).encode() + b"\n")
        out.flush()

    redis = make_redis(settings)
    history = HistoryClient(settings)
    history.start()
    try:
        await run_archiver_for(settings, redis, history, stop, report)
    finally:
        watcher.cancel()
        await history.close()
        await redis.aclose()


def main() -> None:
    first = sys.stdin.buffer.readline()
    if not first:
        return  # the worker went away before it said anything
    data: dict[str, Any] = json.loads(first)
    settings = Settings(_env_file=None, **data)
    os.nice(NICE)
    logs.configure(settings.LOG_FORMAT, settings.LOG_LEVEL)
    # Before asyncio reads stdin: the buffered reader above may hold nothing more (one line was sent).
    asyncio.run(_child(settings))


if __name__ == "__main__":
    main()
