"""An attempt, bracketed by two scripts: ``begin`` and ``finish`` (the worker's named phases).

``begin`` (lua/lib/begin.lua) checks that the attempt is still due (pending, the expected cycle and
attempt, its subscription active), takes the lease and the admission, all or nothing. ``finish``
(lua/finish.lua) settles the breaker, records, writes the next job, gives the lease back only if it
still holds our token, and can acknowledge the inbox entry. A first attempt's ``begin`` runs inside
the fan-out's ``emit_begin`` script, with the event and its delivery records. The worker sends
them through ``gateway.infra.redis_batch``.

Retry jobs are written by the same script that records the attempt, in arq's own format
(``gateway.store.arqjobs``): a pending delivery without a scheduled job cannot exist, and the API
can re-queue a delivery without an arq connection.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.typing import EncodableT

from gateway.domain.events import Event
from gateway.domain.outcomes import Ack, BeginState, DeliveryStatus
from gateway.domain.targets import SubscriptionTarget, Target
from gateway.store.admission import BreakerPolicy, settle_args
from gateway.store.arqjobs import deliver_payload
from gateway.store.events import AttemptLog, encode_event, to_json
from gateway.store.keys import Keys
from gateway.store.records import now_ms
from gateway.store.scripts import ScriptCall


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """What ``begin`` needs besides the delivery: the lease and a subscription's admission."""

    lease_ttl_ms: int
    rate: float  # tokens per second, unless the subscription sets its own ``rate_limit``
    burst: int
    cap: int
    concurrency_wait_ms: int


# ``begin``'s first value: a ``BeginState``, or the status of a delivery that is not pending.
_STATES: dict[str, BeginState | DeliveryStatus] = {s.value: s for s in (*BeginState, *DeliveryStatus)}


@dataclass(slots=True)  # not frozen: one per attempt, and frozen dataclasses are slow to build
class Begun:
    """The answer of ``begin``. ``state`` is ``go`` (the lease, and a subscription's admission, are
    held: attempt now), ``abandon`` (its subscription is gone or disabled: ``reason``), ``leased``
    (someone else is attempting it), ``refused`` (admission: ``reason``, ``wait_ms``), or why
    nothing is due: the delivery's status, ``missing`` or ``stale``."""

    state: BeginState | DeliveryStatus
    cycle: int = 0
    attempts: int = 0
    target: str = ""
    url: str = ""
    secrets: str = ""
    retry_schedule: str = ""
    reason: str = ""
    wait_ms: int = 0
    token: str = ""
    event: str = ""
    deferrals: int = 0  # how often this delivery was put off already (refused)

    @classmethod
    def parse(cls, raw: list[Any], token: str) -> Begun:
        state = _STATES[str(raw[0])]
        if len(raw) == 1:
            return cls(state)
        cycle, attempts = int(raw[1]), int(raw[2])
        if state is BeginState.GO:
            target, url, held, schedule, admission, event = (str(v) for v in raw[3:9])
            return cls(state, cycle, attempts, target, url, held, schedule, admission, 0, token, event)
        if state is BeginState.REFUSED:
            return cls(state, cycle, attempts, reason=str(raw[3]), wait_ms=int(raw[4]), deferrals=int(raw[5]))
        return cls(state, cycle, attempts, reason=str(raw[3]) if len(raw) > 3 else "")


@dataclass(slots=True)
class AttemptRecord:
    """What ``finish`` records about one attempt."""

    status: DeliveryStatus  # pending: to be retried at ``retry_at``
    attempts: int
    code: int | None
    error: str
    log_entry: AttemptLog | None = None
    retry_at: int | None = None


_TOKENS = itertools.count()
_TOKEN_PREFIX = [secrets.token_hex(8)]


def new_token() -> str:
    """A lease/slot token unique among all workers: this process's random prefix and a counter
    (``secrets.token_hex`` per attempt costs more than the rest of ``begin``'s arguments)."""
    return f"{_TOKEN_PREFIX[0]}{next(_TOKENS):x}"


def _new_token_prefix() -> None:
    _TOKEN_PREFIX[0] = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_token_prefix)  # a forked child must not repeat our tokens


def begin_args(
    dlv_id: str,
    cycle: int | None,
    attempt: int | None,
    token: str,
    limits: AttemptLimits,
    now: int,
    with_event: bool = False,
) -> list[str | int | float]:
    """The arguments of lua/lib/begin.lua after the prefix, in its order (``emit_begin`` passes
    them per delivery in its rest; ``begin`` by name from this list)."""
    return [
        dlv_id,
        "" if cycle is None else cycle,
        "" if attempt is None else attempt,
        token,
        limits.lease_ttl_ms,
        now,
        limits.rate,
        limits.burst,
        limits.cap,
        limits.concurrency_wait_ms,
        "1" if with_event else "0",
    ]


_BEGIN_NAMES = (
    "id",
    "cycle",
    "attempt",
    "token",
    "lease_ttl",
    "now",
    "rate",
    "burst",
    "cap",
    "concurrency_wait",
    "with_event",
)


def record_args(dlv_id: str, cycle: int | None, o: AttemptRecord, now: int) -> dict[str, EncodableT]:
    """The named arguments of lua/lib/record.lua after the prefix, retention and queue."""
    job_id, payload = "", b""
    if o.retry_at is not None:
        job_cycle = cycle or 0
        job_id = f"{dlv_id}:c{job_cycle}:a{o.attempts + 1}"
        payload = deliver_payload(dlv_id, job_cycle, o.attempts + 1)
    return {
        "id": dlv_id,
        "cycle": "" if cycle is None else cycle,
        "status": o.status,
        "attempts": o.attempts,
        "code": "" if o.code is None else o.code,
        "err": o.error[:500],
        "now": now,
        "next_at": "" if o.retry_at is None else o.retry_at,
        "log": to_json(o.log_entry) if o.log_entry else "",
        "job_id": job_id,
        "payload": payload,
    }


class AttemptsMixin:
    keys: Keys
    retention: int
    queue: str
    _begin: ScriptCall
    _emit_begin: ScriptCall
    _finish: ScriptCall
    _record: ScriptCall
    _defer: ScriptCall
    _ack: ScriptCall

    async def emit_and_begin(
        self,
        event: Event,
        deliveries: Sequence[tuple[str, Target]],
        limits: AttemptLimits,
        *,
        now: int,
        event_json: str | None = None,
    ) -> tuple[bool, list[str], list[Begun]]:
        """Store an event and its delivery records once, then ``begin`` the first attempt of each
        delivery still pending and never attempted, in one script: the fan-out's only round trip
        before sending. ``event_json``: the event as ``encode_event`` writes it, when the caller
        has it already."""
        rest: list[str | int | float] = []
        for dlv_id, target in deliveries:
            sub = target.subscription if isinstance(target, SubscriptionTarget) else ""
            rest += [dlv_id, to_json(target.to_json()), sub]
        tokens = [new_token() for _ in deliveries]
        for (dlv_id, _), token in zip(deliveries, tokens, strict=True):
            rest += begin_args(dlv_id, 0, 1, token, limits, now)
        created, states, begun = await self._emit_begin(
            p=self.keys.prefix,
            event_id=event.id,
            event_json=event_json or encode_event(event.to_json()),
            retention=self.retention,
            now=now or now_ms(),
            api_id=event.api_id or "",
            event_type=event.type,
            n=len(deliveries),
            rest=rest,
        )
        parsed = [Begun.parse(raw, token) for raw, token in zip(begun, tokens, strict=True)]
        return bool(created), [str(s) for s in states], parsed

    async def begin(
        self,
        dlv_id: str,
        cycle: int | None,
        attempt: int | None,
        limits: AttemptLimits,
        *,
        now: int,
        with_event: bool = False,
    ) -> Begun:
        """Start attempt ``attempt`` of cycle ``cycle`` (None: whatever is next) if it is due;
        ``with_event``: also read its event (``expired`` when it is gone)."""
        token = new_token()
        args = begin_args(dlv_id, cycle, attempt, token, limits, now, with_event)
        named = dict(zip(_BEGIN_NAMES, args, strict=True))
        return Begun.parse(await self._begin(p=self.keys.prefix, **named), token)

    async def finish(
        self,
        dlv_id: str,
        begun: Begun,
        outcome: AttemptRecord,
        *,
        sub: str = "",
        breaker: BreakerPolicy | None = None,
        ok: bool = False,
        gone: bool = False,
        ack: Ack | None = None,
        enqueue: tuple[str, str, bytes] | None = None,
        on_disable: tuple[str, str, bytes] | None = None,
        now: int,
    ) -> tuple[str, str]:
        """Record an attempt ``begin`` allowed: settle the subscription (``sub``), record, give the
        lease back, and with ``ack`` = (inbox, group, entry id), acknowledge that inbox entry.
        ``enqueue`` = (queue, job id, payload in arq's format): a queue target's job, written with
        the record (not if arq has that job or its result already, as ``enqueue_job`` does).
        ``on_disable`` = (queue, job id, payload): the job written if this attempt disables the
        subscription, in the same step (a crash cannot disable it silently).
        Returns (the delivery's status, the breaker state or 'disabled' or '')."""
        inbox, group, entry_id = ack or ("", "", "")
        queue, job_id, payload = enqueue or ("", "", b"")
        named = record_args(dlv_id, begun.cycle, outcome, now)
        if sub:
            assert breaker is not None
            named |= settle_args(ok, gone, breaker)
            named["slot_token"], named["settle_now"] = begun.token, now
            if on_disable is not None:
                named["disable_queue"], named["disable_job_id"], named["disable_job_payload"] = on_disable
        status, state = await self._finish(
            p=self.keys.prefix,
            retention=self.retention,
            queue=self.queue,
            sub=sub,
            lease=self.keys.lease(dlv_id),
            lease_token=begun.token,
            inbox=inbox,
            group=group,
            entry_id=entry_id,
            target_queue=queue,
            target_job_id=job_id,
            target_job_payload=payload,
            **named,
        )
        return str(status), str(state)

    async def ack_entry(self, inbox: str, group: str, entry_id: str) -> None:
        """XACK + XDEL of an inbox entry whose work is done (when no ``finish`` did it)."""
        await self._ack(inbox=inbox, group=group, entry_id=entry_id)

    async def record(
        self,
        dlv_id: str,
        *,
        cycle: int | None,
        status: DeliveryStatus,
        attempts: int,
        code: int | None,
        error: str,
        log_entry: AttemptLog | None = None,
        retry_at: int | None = None,
        now: int | None = None,
    ) -> str:
        """Record an attempt; with ``retry_at``, also write the job of the next attempt."""
        outcome = AttemptRecord(status, attempts, code, error, log_entry, retry_at)
        named = record_args(dlv_id, cycle, outcome, now or now_ms())
        return str(
            await self._record(p=self.keys.prefix, retention=self.retention, queue=self.queue, **named)
        )

    async def defer(
        self, dlv_id: str, cycle: int, attempt: int, run_at: int, *, now: int | None = None
    ) -> bool:
        """Put attempt ``attempt`` off until ``run_at`` (ms, on the same clock as ``now``) without
        counting it."""
        deferred = await self._defer(
            p=self.keys.prefix,
            id=dlv_id,
            cycle=cycle,
            attempt=attempt,
            run_at=run_at,
            queue=self.queue,
            payload=deliver_payload(dlv_id, cycle, attempt),
            retention=self.retention,
            now=now or now_ms(),
        )
        return bool(deferred)
