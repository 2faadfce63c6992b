"""POSTs on keep-alive connections idle about as long as the server's keep-alive (uvicorn: 5 s):
how many fail, for httpx and aiohttp, with their default idle limits and with ours.

Run: .venv/bin/python tests/bench/idle_race.py   (about 4 x 20 x 5 s = 7 minutes). For each client
and idle limit: 20 rounds of 10 POSTs, a pause of 4.995-5.005 s, 10 POSTs again; prints failures.
"""

import asyncio
import socket
from typing import Any

import aiohttp
import httpx
import uvicorn

from gateway.infra.keepalive import IDLE_SECONDS

ROUNDS, PARALLEL = 20, 10


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def rounds(post: Any) -> int:
    failed = 0
    for i in range(ROUNDS):
        await asyncio.gather(*(post() for _ in range(PARALLEL)))
        await asyncio.sleep(4.995 + i * 0.0005)
        answers = await asyncio.gather(*(post() for _ in range(PARALLEL)), return_exceptions=True)
        failed += sum(isinstance(a, Exception) for a in answers)
    return failed


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))  # timeout_keep_alive=5
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.05)
    for idle in (None, IDLE_SECONDS):
        limits = httpx.Limits() if idle is None else httpx.Limits(keepalive_expiry=idle)
        async with httpx.AsyncClient(limits=limits) as http:
            failed = await rounds(lambda: http.post(url))
        print(f"httpx   idle limit {idle or 'default (5 s)'}: {failed} of {ROUNDS * PARALLEL} failed")
        connector = aiohttp.TCPConnector() if idle is None else aiohttp.TCPConnector(keepalive_timeout=idle)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post() -> None:
                async with session.post(url, data=b"x") as response:
                    await response.read()

            failed = await rounds(post)
        print(f"aiohttp idle limit {idle or 'default (15 s)'}: {failed} of {ROUNDS * PARALLEL} failed")
    server.should_exit = True
    await serving


if __name__ == "__main__":
    asyncio.run(main())
