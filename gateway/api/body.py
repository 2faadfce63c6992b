"""Reading request bodies at the edge: size limit first, then the content type."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Receive

from gateway.domain.callbacks import parse_json
from gateway.domain.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from gateway.settings import Settings


async def read_limited(request: Request, limit: int, read_timeout: float = 10.0) -> bytes:
    """The body, refusing with 413 as soon as it exceeds ``limit`` (without reading the rest) and
    with 408 when it has not fully arrived within ``read_timeout`` seconds (uvicorn has no body read
    timeout of its own, so a client trickling bytes could hold a connection forever)."""
    _check_declared(request.headers.get("content-length"), limit)
    return await _within(read_timeout, _read(request, limit))


def _check_declared(content_length: str | None, limit: int) -> None:
    """413 before reading anything when the declared size is over the limit."""
    if content_length is not None:
        try:
            size = int(content_length)
        except ValueError as exc:
            raise BadRequest("invalid Content-Length") from exc
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")


async def _within(read_timeout: float, reading: Coroutine[Any, Any, bytes]) -> bytes:
    try:
        async with asyncio.timeout(read_timeout):
            return await reading
    except TimeoutError as exc:
        raise RequestTimeout(f"request body not received within {read_timeout:g} s") from exc


async def _read(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return media_type_of(request.headers.get("content-type", ""))


def media_type_of(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class Disconnected(Exception):
    """The client went away before its body arrived: there is nobody to answer."""


async def receive_limited(
    receive: Receive, content_length: str | None, limit: int, read_timeout: float
) -> bytes:
    """``read_limited`` for a plain ASGI app (no Starlette ``Request``): the same limit, checks,
    answers and messages, reading ``receive`` directly."""
    _check_declared(content_length, limit)
    return await _within(read_timeout, _receive(receive, limit))


async def _receive(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            raise Disconnected
        if kind != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual case: the whole body in one message
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


async def read_json(request: Request, settings: Settings, *, optional: bool = False) -> dict[str, Any]:
    """The JSON object in the body: 415 for another content type, 400 for anything but an object;
    with ``optional`` an empty body (of any content type) is ``{}``."""
    if not optional and media_type(request) != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    raw = await read_limited(request, settings.GATEWAY_MAX_BODY_BYTES, settings.GATEWAY_BODY_READ_TIMEOUT)
    if optional and not raw.strip():
        return {}
    if media_type(request) != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    return parse_json(raw)


# Tags of the target union (gateway.api.models.Target): pydantic puts the tag in an error's location
# (``targets.1.queue.queue``), which reads as a field that does not exist.
_UNION_TAGS = frozenset({"webhook", "queue"})


def validation_message(exc: ValidationError) -> str:
    """The first problem of a body, as ``field.path: what is wrong``."""
    first = exc.errors()[0]
    parts: list[str] = []
    previous: object = None
    for part in first["loc"]:
        if not (isinstance(previous, int) and part in _UNION_TAGS):
            parts.append(str(part))
        previous = part
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{'.'.join(parts) or 'body'}: {message}"
