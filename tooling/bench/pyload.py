"""The Python load generator: raw HTTP/1.1 keep-alive over asyncio streams, one process per core.

It writes pre-built request bytes and reads just the status line, headers and ``Content-Length``
bytes back, so one process costs ~10x less CPU per request than an httpx client would. Two modes:

* closed loop: ``connections`` clients each send the next request as soon as the last answered;
* open loop: request ``g`` is due at ``start + g / rate`` whatever happened before, and its
  latency is measured from that due time (no coordinated omission: a stall shows up as latency).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

from tooling.bench.corpus import raw_request


@dataclass(frozen=True, slots=True)
class Plan:
    corpus: str
    port: int
    part: int  # this process takes corpus lines part, part + parts, ...
    parts: int
    connections: int
    duration: float
    rate: float = 0.0  # total rate over all processes; 0 = closed loop
    start_wall: float = 0.0  # open loop: the shared time origin (time.time())


@dataclass(slots=True)
class Result:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    elapsed: float = 0.0
    sends: list[tuple[int, float]] = field(default_factory=list)  # (corpus line, wall time sent)
    exhausted: bool = False


def _load(plan: Plan) -> list[tuple[int, bytes]]:
    host = f"127.0.0.1:{plan.port}"
    with open(plan.corpus, encoding="ascii") as f:
        return [(i, raw_request(line, host)) for i, line in enumerate(f) if i % plan.parts == plan.part]


class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, data: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        at = head.lower().find(b"content-length:")
        length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
        if length:
            await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _send(conn: Conn, data: bytes, result: Result) -> bool:
    try:
        result.statuses[await conn.exchange(data)] += 1
        return True
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        result.errors += 1
        conn.close()
        return False


async def _closed(plan: Plan, requests: list[tuple[int, bytes]], result: Result) -> None:
    it = iter(requests)
    deadline = time.monotonic() + plan.duration

    async def client() -> None:
        conn = Conn(plan.port)
        try:
            while time.monotonic() < deadline:
                item = next(it, None)
                if item is None:
                    result.exhausted = True
                    return
                began = time.perf_counter()
                if await _send(conn, item[1], result):
                    result.latencies_ms.append((time.perf_counter() - began) * 1000)
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(plan.connections)))


async def _open(plan: Plan, requests: list[tuple[int, bytes]], result: Result) -> None:
    total = int(plan.rate * plan.duration)
    due = [(g, data) for g, data in requests if g < total]
    result.exhausted = len(due) < (total - plan.part + plan.parts - 1) // plan.parts
    queue: asyncio.Queue[tuple[int, float, bytes] | None] = asyncio.Queue()
    offset = time.monotonic() - time.time()  # wall -> monotonic, to sleep precisely

    async def ticker() -> None:
        for g, data in due:
            at = plan.start_wall + g / plan.rate + offset
            delay = at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((g, at, data))
        for _ in range(plan.connections):
            queue.put_nowait(None)

    async def client() -> None:
        conn = Conn(plan.port)
        try:
            while (item := await queue.get()) is not None:
                g, at, data = item
                result.sends.append((g, time.time()))
                if await _send(conn, data, result):
                    result.latencies_ms.append((time.monotonic() - at) * 1000)
        finally:
            conn.close()

    await asyncio.gather(ticker(), *(client() for _ in range(plan.connections)))


async def _main(plan: Plan) -> Result:
    requests = _load(plan)
    result = Result()
    began = time.monotonic()
    if plan.rate > 0:
        await _open(plan, requests, result)
    else:
        await _closed(plan, requests, result)
    # An open-loop run starts at its shared origin, not when this process got going.
    result.elapsed = time.time() - plan.start_wall if plan.rate > 0 else time.monotonic() - began
    return result


def run_plan(plan: Plan) -> Result:
    """Entry point of one generator process."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_main(plan))
    return uvloop.run(_main(plan))
