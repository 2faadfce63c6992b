"""The apps the bench serves besides the gateway: two baselines, a webhook subscriber, a job sink.

The baselines answer the same requests as the receiver (``POST /callbacks/plivo``) under the same
uvicorn settings: ``bare`` reads the body and returns 200; ``evalsha`` also makes one Redis round
trip (EVALSHA of a one-command script) with the same client settings as the gateway. The
subscriber is a plain ASGI callable (the fastest thing uvicorn serves) that notes when each
event's ``api_id`` arrived; the job sink is an arq worker whose function notes when it started.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request, Response

RECEIVER_PATH = "/callbacks/plivo"
JOBS_HASH = "bench:jobs"  # api_id -> when its job started (epoch s)
ENQUEUED_HASH = "bench:enqueued"  # api_id -> when its job was written to the queue (epoch s)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _with_health(app: FastAPI) -> FastAPI:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Up."""
        return {"status": "ok"}

    return app


def bare_app() -> FastAPI:
    """Baseline (a): FastAPI, body read, 200, no Redis."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(RECEIVER_PATH)
    async def receive(request: Request) -> Response:
        """Read the body and answer 200."""
        await request.body()
        return Response(status_code=200)

    return _with_health(app)


def evalsha_app() -> FastAPI:
    """Baseline (b): the same plus one EVALSHA round trip to Redis."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from gateway.infra.redis_client import make_redis
        from gateway.settings import Settings

        redis = make_redis(Settings())
        app.state.redis = redis
        app.state.script = redis.register_script("return redis.call('INCR', KEYS[1])")
        yield
        await redis.aclose()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.post(RECEIVER_PATH)
    async def receive(request: Request) -> Response:
        """Read the body, run one script, answer 200."""
        await request.body()
        await request.app.state.script(keys=["bench:baseline"])
        return Response(status_code=200)

    return _with_health(app)


class Subscriber:
    """A fast webhook endpoint: 200 to every POST; ``GET /_stats`` says what arrived when and the
    body bytes in all (``GET /_stats?count``: only how many); ``DELETE /_stats`` starts over."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.times: dict[str, float] = {}
        self.count = 0
        self.bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            # ``?count`` while waiting (cheap for this process), the times once at the end.
            stats: dict[str, Any] = {"count": self.count}
            if scope.get("query_string") != b"count":
                stats["times"] = self.times
                stats["bytes"] = self.bytes
            payload = json.dumps(stats).encode()
            await self._answer(send, 200, payload)
            return
        if scope["method"] == "DELETE":
            self.times.clear()
            self.count = self.bytes = 0
            await self._answer(send, 204, b"")
            return
        now = time.time()
        self.count += 1
        self.bytes += len(body)
        with suppress(ValueError):
            self.times.setdefault(str(json.loads(body).get("api_id")), now)
        await self._answer(send, self.status, b"")

    @staticmethod
    async def _answer(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        if status == 204:
            headers = []  # no content, no Content-Length (RFC 9110)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def subscriber_app() -> Subscriber:
    return Subscriber()


def no_content_subscriber_app() -> Subscriber:
    """The history phase's subscription endpoint: 204 at once, to every POST."""
    return Subscriber(status=204)


async def bench_job(ctx: dict[str, Any], event: dict[str, Any]) -> None:
    """Queue target: note when the job for this event started, and when it had been enqueued."""
    started = time.time()
    api_id = str(event.get("api_id"))
    async with ctx["redis"].pipeline(transaction=False) as pipe:
        pipe.hsetnx(JOBS_HASH, api_id, repr(started))
        pipe.hsetnx(ENQUEUED_HASH, api_id, repr(ctx["enqueue_time"].timestamp()))
        await pipe.execute()


def _sink_redis_settings() -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


class JobSinkSettings:
    """arq settings for the queue target (``run_job_sink``).

    ``poll_delay`` is 10 ms: arq's default of 0.5 s would be the whole latency figure."""

    functions = [bench_job]
    queue_name = os.environ.get("BENCH_SINK_QUEUE", "bench:sink")
    poll_delay = 0.01
    max_jobs = 100
    redis_settings = _sink_redis_settings()


def run_job_sink() -> None:
    """The job sink as a user would run a fast arq worker: ``arq``'s own worker, on uvloop."""
    import uvloop
    from arq.worker import run_worker

    uvloop.install()
    run_worker(JobSinkSettings)  # type: ignore[arg-type]
