"""Writing many records straight into Redis, through the store's own scripts, pipelined."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from gateway.domain.callbacks import callback_id
from gateway.settings import Settings
from gateway.store import NewRequest, Store, make_store


def settings_for(redis_url: str, prefix: str) -> Settings:
    return Settings(_env_file=None, REDIS_URL=redis_url, GATEWAY_KEY_PREFIX=prefix)


def metadata_of(size: int, n: int) -> dict[str, Any]:
    """A metadata object whose compact JSON is exactly ``size`` bytes (for size >= 30)."""
    base = {"order_id": n, "note": ""}
    pad = size - len(json.dumps(base, separators=(",", ":")))
    return {"order_id": n, "note": "x" * max(0, pad)}


def new_request(
    api_id: str, targets: list[dict[str, Any]], metadata_bytes: int, timeout_s: int
) -> NewRequest:
    return NewRequest(
        api_id=api_id,
        method="POST",
        resource="Call/",
        params={},
        metadata=metadata_of(metadata_bytes, 42),
        targets=targets,
        timeout_s=timeout_s,
        ref=uuid.uuid4().hex[:12],
    )


async def save_requests(
    redis: Redis, settings: Settings, reqs: Sequence[NewRequest], batch: int = 1000
) -> None:
    """``Store.save_request`` for each request, ``batch`` at a time in one pipeline.

    A Store built over a pipeline queues its scripts instead of running them, so this is
    exactly the submit path's script with the round trips taken out."""
    for start in range(0, len(reqs), batch):
        async with redis.pipeline(transaction=False) as pipe:
            store: Store = make_store(settings, pipe)
            for req in reqs[start : start + batch]:
                await store.save_request(req)
            await pipe.execute()


def inbox_entry(params: dict[str, Any], query: str = "") -> str:
    """The inbox entry the receiver would write for a form-encoded POST callback."""
    entry = {
        "cb": callback_id(query, params),
        "at": int(time.time() * 1000),
        "m": "POST",
        "q": query,
        "enc": "form",
        "p": params,
    }
    return json.dumps(entry, ensure_ascii=False)


async def push_inbox(redis: Redis, inbox: str, entries: Sequence[str], batch: int = 1000) -> None:
    for start in range(0, len(entries), batch):
        async with redis.pipeline(transaction=False) as pipe:
            for entry in entries[start : start + batch]:
                pipe.xadd(inbox, {"e": entry})
            await pipe.execute()
