"""The inbox stream: callbacks stored by the receiver (``ingest``), and the worker's consumer group.

``ingest`` is the receiver's one round trip: the dedup mark then ``XADD inbox`` in one script, so
the 200 is sent only for a callback that is in the inbox, and a duplicate finds its dedup mark
(marks and nonces are fields of time-bucketed hashes: lua/lib/seen.lua).
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.store.keys import Keys
from gateway.store.scripts import ScriptCall

INBOX_GROUP = "correlate"


class InboxMixin:
    redis: Redis
    keys: Keys
    inbox: str
    dedup_ttl: int
    nonce_window: int
    _ingest: ScriptCall
    _ingest_forget: ScriptCall
    _forget_consumer: ScriptCall

    # --- receiver -------------------------------------------------------------------------

    async def ingest(self, cb_id: str, entry_json: str, nonce_id: str = "") -> int:
        """Store a callback durably unless seen before: 1 stored, 0 duplicate, -1 replayed nonce."""
        return int(await self._ingest(**self._ingest_args(cb_id, entry_json, nonce_id)))

    def _ingest_args(self, cb_id: str, entry_json: str, nonce_id: str) -> dict[str, str | int]:
        return {
            "inbox": self.inbox,
            "p": self.keys.prefix,
            "cb": cb_id,
            "nonce": nonce_id if self.nonce_window else "",
            "dedup_ttl": self.dedup_ttl,
            "entry": entry_json,
            "nonce_window": self.nonce_window,
        }

    async def forget_ingest(self, cb_id: str, nonce_id: str) -> None:
        """Undo a stored callback's dedup mark and nonce, so that its retry is stored again."""
        await self._ingest_forget(
            p=self.keys.prefix,
            cb=cb_id,
            nonce=nonce_id if self.nonce_window else "",
            dedup_ttl=self.dedup_ttl,
            nonce_window=self.nonce_window,
        )

    async def ingest_replicated(
        self, cb_id: str, entry_json: str, nonce_id: str, replicas: int, timeout_ms: int
    ) -> tuple[int, int]:
        """``ingest``, then ``WAIT replicas timeout_ms`` on the same connection (a pipeline): WAIT
        counts the replicas that acknowledged this connection's writes. Returns (ingest result,
        replicas that acknowledged)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._ingest(client=pipe, **self._ingest_args(cb_id, entry_json, nonce_id))
            pipe.execute_command("WAIT", replicas, timeout_ms)
            stored, acked = await pipe.execute()
        return int(stored), int(acked)

    # --- the worker's consumer group ------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.inbox, INBOX_GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists already, which is the normal case
            if "BUSYGROUP" not in str(exc):
                raise

    async def forget_consumer(self, name: str) -> bool:
        """Remove a worker's consumer from the inbox's group, unless it still holds an entry (that
        one waits to be claimed by a live worker; the consumer goes on a later sweep)."""
        return bool(await self._forget_consumer(inbox=self.inbox, group=INBOX_GROUP, consumer=name))

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Remove the group's consumers idle for ``idle_ms`` that hold no entry: mostly workers that
        died (each process reads under a new name). Redis 7.0 counts idle time from a consumer's
        last read that returned something, so a live worker on a quiet inbox may go too: harmless,
        since it held nothing and its next read, a blocked one included, creates it again (tested
        on redis-server 7.0.15). Returns how many went."""
        consumers = await self.redis.xinfo_consumers(self.inbox, INBOX_GROUP)
        forgotten = 0
        for consumer in consumers:
            if int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                forgotten += await self.forget_consumer(str(consumer["name"]))
        return forgotten
