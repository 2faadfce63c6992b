"""Idempotent submits: the same Idempotency-Key and body get the first response, and Plivo is
called once, also when the two arrive at the same time on two gateway processes.

The first caller claims the key (one script: HSETNX + lease TTL) and calls upstream; others with
the same key wait for its answer and return it. A different body under the same key is 422.
Keys are scoped to the API key that used them. What is remembered:

* success (202), Plivo's final refusals (4xx) and an unknown outcome (502 with ``status:
  unknown``: the request may have been carried out, gateway.services.upstream): kept for
  ``GATEWAY_IDEMPOTENCY_TTL``, so a retry gets the same answer and sends nothing (Stripe keeps
  the result of a request that began executing, failures included);
* failures that provably sent nothing (429, a connection never established, Redis down before
  the send, a crash before it): the claim is released so that a retry goes ahead.

A process that dies mid-call leaves its claim until the lease (the longest an upstream call can
take) runs out; after that a retry is sent upstream again: the one case where Plivo may see the
request twice, because nobody can know whether the lost call reached it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Required, TypedDict

from gateway.domain.errors import AcceptedNotRecorded, RateLimited, Unprocessable, UpstreamError, new_api_id
from gateway.settings import Settings
from gateway.store import Store

POLL_S = 0.05


class Answer(TypedDict, total=False):
    """A submit's answer, as sent and as an Idempotency-Key replays it: accepted (``message``,
    ``status``), refused (``error``) or of unknown outcome (``error``, ``status``, ``ref``)."""

    api_id: Required[str]
    message: str
    status: str
    error: str
    ref: str


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Answer


def _lease(s: Settings) -> float:
    return s.UPSTREAM_RETRY_BUDGET + s.UPSTREAM_READ_TIMEOUT + s.UPSTREAM_RATE_MAX_WAIT + 5


async def run_idempotent(
    store: Store,
    settings: Settings,
    api_key: str,
    idempotency_key: str,
    body_hash: str,
    send: Callable[[], Awaitable[Reply]],
) -> Reply:
    key_id = hashlib.sha256(f"{api_key}|{idempotency_key}".encode()).hexdigest()[:40]
    lease = _lease(settings)
    give_up = time.monotonic() + lease
    ttl = settings.GATEWAY_IDEMPOTENCY_TTL
    while True:
        claim = await store.idempotency_claim(key_id, body_hash, lease)
        if claim[0] == "claimed":
            break
        found_state, found_body, status, response, lease_left_ms = claim
        if found_body != body_hash:
            raise Unprocessable("Idempotency-Key was used with a different request body")
        if found_state == "done":
            return Reply(int(status), json.loads(response))
        # Wait while the claim is alive, never past it: when it runs out unfinished (its holder
        # died, or Plivo accepted but Redis could not record it) a waiter must not be the one
        # that silently sends the request again; the caller decides when to retry.
        if time.monotonic() > give_up or int(lease_left_ms) < POLL_S * 4000:
            retry_after = max(1.0, int(lease_left_ms) / 1000)
            raise RateLimited(
                "a request with this Idempotency-Key is still in progress", retry_after=retry_after
            )
        await asyncio.sleep(POLL_S)  # rare: two identical submits at the same moment
    try:
        reply = await send()
    except UpstreamError as exc:  # Plivo's final answer: remembered like a success
        body: Answer = {"api_id": new_api_id(), "error": exc.message}
        await store.idempotency_finish(key_id, exc.status_code, json.dumps(body), ttl)
        raise
    except AcceptedNotRecorded:
        # Plivo has the request: keep the claim (until its lease runs out) so that a retry with
        # this key waits or fails instead of sending it again.
        raise
    except BaseException:
        await asyncio.shield(store.idempotency_release(key_id))
        raise
    await store.idempotency_finish(key_id, reply.status, json.dumps(reply.body), ttl)
    return reply
