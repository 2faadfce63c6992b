"""Structured logging: JSON lines in production, readable key=value in ``dev``.

Secrets never reach a log line: the settings hold them as ``SecretStr`` and a processor masks
any field whose name suggests a credential, as a second line of defence.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_SENSITIVE = ("token", "secret", "password", "authorization", "api_key")


@functools.lru_cache(maxsize=1024)
def _sensitive(key: str) -> bool:
    return any(word in key.lower() for word in _SENSITIVE)


def _mask(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if _sensitive(key):
            event[key] = "***"
    return event


class _Clock:
    """ISO 8601 UTC timestamps as structlog's ``TimeStamper(fmt="iso", utc=True)`` writes them,
    formatting the date and time once per second rather than once per line."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second, self.prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        micros = int((now - second) * 1_000_000)
        event["timestamp"] = f"{self.prefix}.{micros:06d}Z" if micros else f"{self.prefix}Z"
        return event


def _fallback(value: Any) -> Any:
    # What structlog's JSONRenderer does with what json cannot encode.
    structlog_repr = getattr(value, "__structlog__", None)
    return structlog_repr() if structlog_repr is not None else repr(value)


# structlog's JSONRenderer calls json.dumps(..., default=...), which builds an encoder per line.
_json_line = json.JSONEncoder(default=_fallback).encode


def _render_json(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    return _json_line(event)


def configure(fmt: str = "json", level: str = "INFO", file: TextIO | None = None) -> None:
    renderer: Any = _render_json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _Clock(),
            _mask,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.WriteLoggerFactory(file=file or sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str) -> Any:
    return structlog.get_logger(name)


# Paths with their own log line (the receiver logs one per callback) or too frequent to be worth one.
_QUIET_PREFIXES = ("/callbacks/", "/metrics", "/healthz", "/readyz")


class AccessLog:
    """Pure ASGI middleware: one ``api_request`` line per API request (method, path, status, ms).

    No body or header is read or logged (bearer keys live in headers), and the query string is
    left out; ids in the path (``/v1/requests/{api_id}``) are kept. It costs one ``perf_counter``
    pair and one log call per request, no extra task or buffering.
    """

    def __init__(self, app: Any, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self.log = get("gateway.access")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not self.enabled or path.startswith(_QUIET_PREFIXES):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = round((time.perf_counter() - started) * 1000, 2)
            self.log.info("api_request", method=scope.get("method"), path=path, status=status, ms=ms)
