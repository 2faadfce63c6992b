"""The inbox consumer: correlate each stored callback, emit its event, deliver it.

The receiver appends callbacks to the ``inbox`` stream; workers read it through one consumer group
(``XREADGROUP ... BLOCK``), so a callback reaches a worker without arq's polling delay and without
an ``enqueue_job`` on the receiver's request path. An entry is acknowledged (XACK + XDEL in one
script) only after its event is stored and every delivery either succeeded or has a retry job.
Entries of a worker that died stay pending in the group and are claimed by another worker after
``WORKER_CLAIM_IDLE`` seconds (XAUTOCLAIM); every step is idempotent, so that is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator

from redis.exceptions import RedisError, ResponseError

from gateway.domain.callbacks import InboxEntry, classify, parse_form
from gateway.domain.events import Event, event_id_for, timeout_event_id
from gateway.domain.outcomes import Ack, CorrelationOutcome
from gateway.domain.targets import targets_from_json
from gateway.infra import logs, metrics, redis_errors, tracing
from gateway.store import INBOX_GROUP
from workers.context import WorkerContext
from workers.fanout import fan_out

log = logs.get("workers.consumer")

CLAIM_EVERY_S = 5.0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


async def handle_entry(
    ctx: WorkerContext, raw: str, *, final: bool = False, ack: Ack | None = None, duplicate: bool = False
) -> bool:
    """Correlate one inbox entry and, unless it was parked, emit and deliver its event.

    ``ack``: the entry may be acknowledged in the same script as its only delivery's record.
    Returns True when it was; the caller acknowledges it otherwise. ``duplicate``: the receiver
    had stored the same callback before (lua/ingest.lua): it is only logged, for history."""
    entry: InboxEntry = json.loads(raw)  # the receiver's JSON (gateway.api.routes.receiver)
    if entry.get("t") == "timeout":
        return await _timed_out(ctx, str(entry["api_id"]), int(entry["at"]), ack)
    cb_id = str(entry["cb"])
    at, sv = int(entry["at"]), str(entry.get("sv", ""))
    if "perr" in entry:
        if duplicate:
            await ctx.store.log_duplicate(f"none:{cb_id}", cb_id, kind="unknown", at=at, sv=sv)
            return False
        return await _unparsed(ctx, cb_id, raw, entry, ack)
    params = entry.get("p") or {}
    c = classify(cb_id, params, parse_form(str(entry.get("q", "")).encode()))
    if duplicate:
        await ctx.store.log_duplicate(c.ckey, cb_id, kind=c.kind, at=at, sv=sv, ref=c.ref)
        return False
    # The subscriptions that want this event type are read alongside the correlation: the two
    # scripts share one pipeline (gateway.infra.redis_batch). An unmatched callback reads its own.
    matching = ctx.deliveries.matching_subscriptions_soon(c.event_type)
    try:
        corr = await ctx.store.correlate(
            c.ckey, cb_id, raw, kind=c.kind, seq=c.seq, links=c.links, final=final, ref=c.ref, at=at, sv=sv
        )
    finally:
        subscriptions = await matching  # queued already: never left unawaited
    outcome = corr.outcome
    metrics.child(metrics.CALLBACKS, outcome).inc()
    log.info("correlated", cb=cb_id, ckey=c.ckey, outcome=outcome, api_id=corr.api_id or None)
    if outcome is CorrelationOutcome.PARKED:
        return False
    if outcome is CorrelationOutcome.UNMATCHED:
        event = Event.new(event_id_for(cb_id), "callback.unmatched", int(entry["at"]), None, {}, params)
        return await fan_out(ctx, event, [], ack=ack)
    event = Event.new(event_id_for(cb_id), c.event_type, int(entry["at"]), corr.api_id, corr.metadata, params)
    async with _trace(ctx, event, "callback.correlate", {"callback_gateway.outcome": outcome.value}):
        # A stale status update is recorded with the request but not fanned out as current state.
        # Storing the event also wakes whoever waits on the request (?wait=, SSE).
        deliver = outcome is not CorrelationOutcome.STALE
        return await fan_out(ctx, event, corr.targets, deliver=deliver, subscriptions=subscriptions, ack=ack)


async def _unparsed(ctx: WorkerContext, cb_id: str, raw: str, entry: InboxEntry, ack: Ack | None) -> bool:
    """A signed callback whose payload did not parse (kept raw by the receiver): nothing can
    correlate it, so it is unmatched at once, listed with the unmatched callbacks, and its event
    carries the payload as it came and why it did not parse."""
    at, sv = int(entry["at"]), str(entry.get("sv", ""))
    corr = await ctx.store.correlate(f"none:{cb_id}", cb_id, raw, kind="unknown", final=True, at=at, sv=sv)
    metrics.child(metrics.CALLBACKS, corr.outcome).inc()
    log.warning("callback_unparsed", cb=cb_id, error=entry["perr"])
    data: dict[str, str] = {}
    if "raw" in entry:
        data["raw"] = entry["raw"]
    if "raw_b64" in entry:
        data["raw_b64"] = entry["raw_b64"]
    data.update(error=entry["perr"], query=entry.get("q", ""), method=entry.get("m", ""))
    event = Event.new(event_id_for(cb_id), "callback.unmatched", int(entry["at"]), None, {}, data)
    return await fan_out(ctx, event, [], ack=ack)


@contextlib.asynccontextmanager
async def _trace(
    ctx: WorkerContext, event: Event, name: str, attributes: dict[str, str | int] | None = None
) -> AsyncIterator[None]:
    """Record the submit's trace context in the event (GATEWAY_TRACE_PROPAGATION); with OpenTelemetry
    (GATEWAY_OTEL_ENABLED), the event carries instead a span's, child of it, around the fan-out."""
    stored: str | None = None
    if ctx.settings.GATEWAY_TRACE_PROPAGATION and event.api_id:
        (stored,) = await ctx.store.request_fields(event.api_id, "traceparent")
    if not stored or not event.api_id:
        yield
        return
    attributes = {**(attributes or {}), "callback_gateway.event_id": event.id}
    attributes["callback_gateway.api_id"] = event.api_id
    with tracing.span(ctx.settings, name, stored, fallback=stored, attributes=attributes) as span:
        event.traceparent = span.traceparent
        yield


async def _timed_out(ctx: WorkerContext, api_id: str, at: int, ack: Ack | None) -> bool:
    metadata, targets = await ctx.store.request_fields(api_id, "metadata", "targets")
    data = {"api_id": api_id, "status": "timed_out"}
    event = Event.new(
        timeout_event_id(api_id),
        "request.timed_out",
        at,
        api_id,
        json.loads(metadata) if metadata else {},
        data,
    )
    async with _trace(ctx, event, "request.timed_out"):
        log.info("timed_out", api_id=api_id)
        return await fan_out(ctx, event, targets_from_json(json.loads(targets)) if targets else [], ack=ack)


async def _poison(ctx: WorkerContext, entry_id: str, fields: dict[str, str]) -> None:
    """A poison entry must not block the stream forever: log it, keep it for inspection (capped)."""
    log.exception("entry_failed", entry=entry_id)
    await ctx.redis.xadd(
        ctx.store.keys.inbox_failed, {"e": fields.get("e", "")}, maxlen=100_000, approximate=True
    )


async def _one(ctx: WorkerContext, entry_id: str, fields: dict[str, str]) -> None:
    """Handle one entry, then acknowledge it (XACK + XDEL in one script) unless its delivery's
    record already did."""
    try:
        ack = Ack(ctx.store.inbox, INBOX_GROUP, entry_id)
        duplicate = fields.get("dup") == "1"
        if await handle_entry(
            ctx, fields["e"], final=fields.get("final") == "1", ack=ack, duplicate=duplicate
        ):
            return
    except (RedisError, OSError) as exc:
        if redis_errors.transient(exc):
            log.warning("entry_retry_later", entry=entry_id, error=type(exc).__name__)
            return  # left pending in the group; claimed again later
        await _poison(ctx, entry_id, fields)
    except Exception:
        await _poison(ctx, entry_id, fields)
    await ctx.deliveries.ack_entry(ctx.store.inbox, INBOX_GROUP, entry_id)


class _InFlight:
    """Up to ``capacity`` entries handled at once, each acknowledged as soon as it is done: a
    slow delivery holds one slot, not a whole batch."""

    def __init__(self, ctx: WorkerContext, capacity: int) -> None:
        self.ctx = ctx
        self.capacity = capacity
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def free(self) -> int:
        return self.capacity - len(self.tasks)

    def spawn(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        for entry_id, fields in entries:
            if fields:  # a claimed entry deleted meanwhile comes back empty
                task = asyncio.create_task(_one(self.ctx, entry_id, fields))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def wait_for_slot(self) -> None:
        if self.free <= 0:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)

    async def drain(self) -> None:
        if self.tasks:
            try:
                await asyncio.wait(self.tasks)
            except asyncio.CancelledError:
                # Shutdown grace is over: cancel what is left. Those entries were not
                # acknowledged, so another worker claims and finishes them.
                for task in self.tasks:
                    task.cancel()
                raise


async def _read(ctx: WorkerContext, name: str, flight: _InFlight, claim: bool) -> None:
    await flight.wait_for_slot()
    if claim:
        claimed = await ctx.redis.xautoclaim(
            ctx.store.inbox,
            INBOX_GROUP,
            name,
            min_idle_time=int(ctx.settings.WORKER_CLAIM_IDLE * 1000),
            start_id="0-0",
            count=max(1, flight.free),
        )
        flight.spawn(claimed[1])
        await flight.wait_for_slot()
    reply = await ctx.redis.xreadgroup(
        INBOX_GROUP, name, {ctx.store.inbox: ">"}, count=max(1, flight.free), block=500
    )
    for _, entries in reply or []:
        flight.spawn(entries)


async def run_consumer(ctx: WorkerContext, stop: asyncio.Event) -> None:
    """Read the inbox until ``stop`` is set; entries in flight are finished before returning."""
    await ctx.store.ensure_group()
    name = consumer_name()
    loop = asyncio.get_running_loop()
    flight = _InFlight(ctx, ctx.settings.WORKER_CONCURRENCY)
    next_claim = 0.0
    try:
        while not stop.is_set():
            try:
                claim = loop.time() >= next_claim
                if claim:
                    next_claim = loop.time() + CLAIM_EVERY_S
                await _read(ctx, name, flight, claim)
            except ResponseError as exc:
                if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):
                    # The stream was deleted under us (an operator's FLUSHDB): recreate it.
                    await _recreate(ctx)
                else:
                    log.error("inbox_error", error=str(exc))
                    await asyncio.sleep(0.5)
            except (RedisError, OSError) as exc:
                log.warning("inbox_unavailable", error=type(exc).__name__)
                await asyncio.sleep(0.5)
            except Exception:
                # The consumer must outlive any bug: log it and go on.
                log.exception("consumer_error")
                await asyncio.sleep(0.5)
    finally:
        await flight.drain()
        # Each process reads under a name of its own: leave none behind (unless it still holds
        # entries, cut off by the shutdown grace; the sweeps remove it once they are claimed).
        with contextlib.suppress(RedisError, OSError):
            await ctx.store.forget_consumer(name)


async def _recreate(ctx: WorkerContext) -> None:
    try:
        await ctx.store.ensure_group()
    except (RedisError, OSError) as exc:
        log.warning("inbox_unavailable", error=type(exc).__name__)
        await asyncio.sleep(0.5)
