"""Correlation: a callback meets its request (lua/correlate.lua).

The script resolves the callback's ckey to a request and either completes/links it or parks the
callback, atomically. Re-running it for the same callback id is harmless (``result_cb``, field
``b``, records which callback completed a request; a replayed one reports ``replay``).
"""

from __future__ import annotations

import json

from gateway.domain.outcomes import CorrelationOutcome
from gateway.domain.targets import targets_from_json
from gateway.store.keys import Keys
from gateway.store.records import Correlation, now_ms, unpack_targets
from gateway.store.scripts import ScriptCall


class CorrelationMixin:
    keys: Keys
    retention: int
    link_ttl: int
    grace: int
    _correlate: ScriptCall
    _callback_dup: ScriptCall

    async def correlate(
        self,
        ckey: str,
        cb_id: str,
        entry_json: str,
        *,
        kind: str,
        seq: str = "",
        links: list[str] | None = None,
        final: bool = False,
        ref: str = "",
        at: int | None = None,
        sv: str = "",
    ) -> Correlation:
        """``at``: when the callback was received (default now); ``sv``: the signature version
        that verified it. Both go to its line in the callback log (lua/lib/callback_log.lua)."""
        now = now_ms()
        raw = await self._correlate(
            p=self.keys.prefix,
            ckey=ckey,
            cb=cb_id,
            entry=entry_json,
            now=now,
            grace=self.grace * 1000,
            kind=kind,
            seq=seq,
            link_ttl=self.link_ttl,
            retention=self.retention,
            final="1" if final else "0",
            ref=ref,
            at=now if at is None else at,
            sv=sv,
            links=links or [],
        )
        outcome, api_id, status, metadata, targets, resource = (str(x) for x in raw)
        return Correlation(
            outcome=CorrelationOutcome(outcome),
            api_id=api_id,
            previous_status=status,
            metadata=json.loads(metadata) if metadata else {},
            targets=targets_from_json(unpack_targets(targets)) if targets else [],
            resource=resource,
        )

    async def log_duplicate(
        self, ckey: str, cb_id: str, *, kind: str, at: int, sv: str = "", ref: str = ""
    ) -> str:
        """Log a duplicate callback with what it belongs to (lua/callback_dup.lua): the api_id or
        unmatched event id it was logged with, '' if Redis holds neither any more."""
        owner = await self._callback_dup(
            p=self.keys.prefix,
            ckey=ckey,
            cb=cb_id,
            ref=ref,
            at=at,
            sv=sv,
            kind=kind,
            now=now_ms(),
            link_ttl=self.link_ttl,
            retention=self.retention,
        )
        return str(owner)
