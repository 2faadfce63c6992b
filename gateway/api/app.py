"""The FastAPI application: API, callback receiver and operations endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from gateway.api import conformance
from gateway.api.deps import known_query_only
from gateway.api.routes import callbacks, deliveries, health, receiver, requests, streams, subscriptions
from gateway.api.routes.proxy import router as proxy_router
from gateway.api.routes.proxy import tokens_router
from gateway.api.state import GatewayState
from gateway.domain.errors import GatewayError, new_api_id
from gateway.history.client import HistoryClient
from gateway.infra import logs
from gateway.infra.redis_client import make_redis
from gateway.services.notify import Notifier
from gateway.services.ratelimit import SharedRateLimiter
from gateway.services.upstream import PlivoClient, RetryBudget, upstream_http
from gateway.settings import Settings
from gateway.store import make_store
from gateway.store.keys import Keys

log = logs.get("gateway.api.app")

# What the public listener serves when the API has a port of its own (GATEWAY_ADMIN_PORT).
PUBLIC_PATHS = frozenset({*receiver.PATHS, "/healthz", "/readyz"})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"api_id": new_api_id(), "error": message}, status_code=status, headers=headers)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return _error(exc.status_code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        return _error(400, f"{where}: {first.get('msg')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RedisError)
    async def redis_error(_: Request, exc: RedisError) -> JSONResponse:
        log.error("redis_unavailable", error=type(exc).__name__)
        return _error(503, "storage unavailable, retry later", {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        api_id = new_api_id()
        log.exception("unhandled_error", api_id=api_id, path=request.url.path)
        return JSONResponse({"api_id": api_id, "error": "internal server error"}, status_code=500)


class GatewayApp(FastAPI):
    """FastAPI, with Plivo's callbacks served ahead of it.

    ``POST``/``GET /callbacks/plivo`` go straight to the receiver's ASGI app: FastAPI's middleware
    stack and routing cost several times the receiver's own work per callback, and the receiver
    needs none of it (it renders its own errors in the same shape, and the access log skips
    ``/callbacks/`` anyway). Everything else, including other methods on that path (405 with
    ``Allow``), takes the usual way."""

    receiver: receiver.Receiver
    admin_port: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] in receiver.PATHS
            and scope["method"] in receiver.METHODS
            and not scope.get("root_path")
        ):
            await self.receiver(scope, receive, send)
            return
        if self.admin_port and scope["type"] != "lifespan" and not self._allowed_here(scope):
            await _error(404, f"Not Found: no route for {scope.get('path', '')}")(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _allowed_here(self, scope: Scope) -> bool:
        """With GATEWAY_ADMIN_PORT set, the public port serves only the receiver and health."""
        server = scope.get("server")
        return bool(server and server[1] == self.admin_port) or scope.get("path") in PUBLIC_PATHS


def create_app(settings: Settings) -> FastAPI:
    callback_receiver = receiver.Receiver(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = make_redis(settings)
        http = upstream_http(settings)
        store = make_store(settings, redis)
        limiter = SharedRateLimiter(
            store,
            "upstream",
            limit=settings.UPSTREAM_RATE_LIMIT,
            window=settings.UPSTREAM_RATE_WINDOW,
            max_wait=settings.UPSTREAM_RATE_MAX_WAIT,
        )
        plivo = PlivoClient(
            http,
            api_url=settings.PLIVO_API_URL,
            auth_id=settings.PLIVO_AUTH_ID,
            auth_token=settings.PLIVO_AUTH_TOKEN.get_secret_value(),
            budget=RetryBudget(
                attempts=settings.UPSTREAM_MAX_ATTEMPTS, total_seconds=settings.UPSTREAM_RETRY_BUDGET
            ),
            limiter=limiter,
        )
        # Pub/sub blocks on reads by design: its connection must not have a read timeout.
        notify_redis = make_redis(settings, socket_timeout=None)
        notifier = Notifier(notify_redis, Keys(settings.GATEWAY_KEY_PREFIX).notify_channel)
        notifier.start()
        history = HistoryClient(settings)
        history.start()
        app.state.gw = GatewayState(settings, redis, store, http, plivo, notifier, history)
        app.state.gw.backlog.start()
        callback_receiver.open(app.state.gw)
        try:
            yield
        finally:
            await notifier.close()
            await app.state.gw.backlog.close()
            await history.close()
            await notify_redis.aclose()
            await http.aclose()
            await redis.aclose()

    app = GatewayApp(
        title="callback-gateway",
        version="0.1.0",
        lifespan=lifespan,
        # A redirect to the slashed path would be built from the Host header: answer 404 instead.
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        # FastAPI's built-in OpenTelemetry hooks wrap every request; off unless tracing is set up.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.receiver = callback_receiver
    app.admin_port = settings.GATEWAY_ADMIN_PORT
    _install_handlers(app)
    app.add_middleware(logs.AccessLog, enabled=settings.GATEWAY_ACCESS_LOG)
    conformance.install(app)
    strict_query = [Depends(known_query_only)]
    # The drop-in proxy passes its query string on to Plivo: it is Plivo's to judge.
    app.include_router(proxy_router)
    app.include_router(tokens_router, dependencies=strict_query)
    app.router.routes.extend(callback_receiver.routes())
    app.include_router(requests.router, dependencies=strict_query)
    app.include_router(streams.router, dependencies=strict_query)
    app.include_router(callbacks.router, dependencies=strict_query)
    app.include_router(subscriptions.router, dependencies=strict_query)
    app.include_router(deliveries.router, dependencies=strict_query)
    app.include_router(deliveries.events_router, dependencies=strict_query)
    app.include_router(health.router)
    return app
