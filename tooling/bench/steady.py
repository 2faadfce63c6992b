"""The history phase's bucket hashes filled as a running gateway's are, before the bytes are measured.

Dedup and nonce marks are fields of a period's 4,096 bucket hashes, refs fields of an hour's 4,096
(gateway/store/lua/lib/seen.lua, gateway/store/keys.py). The phase's few hundred requests alone put
about one field in each bucket, and each then costs a small hash of its own (about 100 B) where a
running gateway pays about 40 B a field. So before the measured burst the buckets of the current
period are given the fields ``rate`` requests a second would have put there by then on average
(half a period's worth), spread as the real ones are; their size is in the "before" snapshot, and
what the burst adds is what a request costs at that rate.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.settings import Settings
from gateway.store.keys import DEDUP, HOUR_MS, MARK_SUB_HEX, NONCE, REF_BUCKETS_HEX, REFS

PIPELINE = 5000


@dataclass(frozen=True)
class Buckets:
    base: str  # e.g. "cg:dedup:"
    span_s: int  # one period
    sub_hex: int
    ttl_s: int | None  # None: EXPIREAT the end of the next period (seen.lua)


def _kinds(prefix: str) -> list[Buckets]:
    fields = Settings.model_fields
    return [
        Buckets(prefix + DEDUP, int(fields["GATEWAY_DEDUP_TTL"].default), MARK_SUB_HEX, None),
        Buckets(prefix + NONCE, int(fields["GATEWAY_NONCE_WINDOW"].default), MARK_SUB_HEX, None),
        Buckets(prefix + REFS, HOUR_MS // 1000, REF_BUCKETS_HEX, int(fields["GATEWAY_LINK_TTL"].default)),
    ]


async def _current(redis: Redis, kind: Buckets, now_s: int) -> tuple[int, int, str] | None:
    """The current period, how many fields its buckets hold, and one of those fields."""
    period = now_s // kind.span_s
    held, sample = 0, ""
    async for key in redis.scan_iter(match=f"{kind.base}{period}:*", count=1000):
        held += int(await redis.hlen(key))  # type: ignore[misc]
        sample = sample or str(await redis.hrandfield(key))
    return (period, held, sample) if held else None


async def fill(redis: Redis, prefix: str, rate: float, requests_seen: int) -> dict[str, Any]:
    """Fields added per kind: as many as ``rate`` requests a second put in half a period, at the
    fields per request the ``requests_seen`` requests so far put there, less those already there."""
    seconds, _ = await redis.time()
    now_s = int(seconds)
    added: dict[str, Any] = {}
    for kind in _kinds(prefix):
        current = await _current(redis, kind, now_s)
        if current is None:
            continue
        period, held, sample = current
        per_request = held / requests_seen
        want = int(rate * per_request * kind.span_s / 2) - held
        expire_at = (period + 2) * kind.span_s
        pipe = redis.pipeline(transaction=False)
        for n in range(max(0, want)):
            sub = f"{random.getrandbits(4 * kind.sub_hex):0{kind.sub_hex}x}"
            key = f"{kind.base}{period}:{sub}"
            pipe.hset(key, secrets.token_hex(len(sample) // 2 + 1)[: len(sample)], "1")
            if kind.ttl_s is None:
                pipe.expireat(key, expire_at)
            else:
                pipe.expire(key, kind.ttl_s)
            if n % PIPELINE == PIPELINE - 1:
                await pipe.execute()
        await pipe.execute()
        added[kind.base.removeprefix(prefix).rstrip(":")] = {
            "fields_per_request": round(per_request, 2),
            "fields_added": max(0, want),
            "period_s": kind.span_s,
        }
    return added
