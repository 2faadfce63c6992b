"""Reading request bodies at the edge: size limit first, then the content type."""

from __future__ import annotations

from fastapi import Request

from gateway.errors import BadRequest, PayloadTooLarge


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing with 413 as soon as it exceeds ``limit`` (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise BadRequest("invalid Content-Length") from exc
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
