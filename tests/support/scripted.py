"""A webhook endpoint for delivery tests that answers from a script, per request.

Each request takes the next ``Reply`` (status, delay, headers, body, something to do first); when
the script is used up it answers 200. Every request is recorded with its arrival time and headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.receiver import Received
from tests.support.servers import ServerThread


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0  # stream this many bytes of body
    before: Callable[[], object] | None = None  # run (blocking) before answering


@dataclass
class ScriptedEndpoint:
    script: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    server: ServerThread | None = None

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            self.received.append(Received(request.url.path, dict(request.headers), body, time.time()))
            reply = self.script.pop(0) if self.script else Reply()
            if reply.before is not None:
                reply.before()
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.body_bytes:

                async def chunks():  # type: ignore[no-untyped-def]
                    for _ in range(reply.body_bytes // 65536 + 1):
                        yield b"x" * 65536

                return StreamingResponse(chunks(), status_code=reply.status, headers=reply.headers)
            return Response(status_code=reply.status, headers=reply.headers)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST", "GET"])])

    def start(self) -> ScriptedEndpoint:
        self.server = ServerThread(self.app()).start()
        return self

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return self.server.url + path

    def on(self, path: str = "/hook") -> list[Received]:
        return [r for r in self.received if r.path == path]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
