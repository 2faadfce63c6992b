"""``Store``: the receive path's data (requests, callbacks, correlation), one instance per process
sharing one pool. Each concern is a module of its own; ``Store`` puts them together and loads
their scripts once:

* ``gateway.store.inbox``: callbacks in (``ingest``) and the worker's consumer group;
* ``gateway.store.requests``: submit, and the status and list APIs' reads;
* ``gateway.store.correlation``: a callback meets its request;
* ``gateway.store.sweeps``: deadlines, parked callbacks past their grace, index trimming;
* ``gateway.store.limits``: Idempotency-Key claims and the shared upstream rate limiter;
* ``gateway.store.records``: how a request is stored.

Everything per request or per callback has a TTL (retention, dedup window, nonce window); the
indexes are trimmed by the sweep and the deadline queues drained by it, so memory follows traffic x
retention, not the age of the system (what each costs: docs/performance.md).
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.store import scripts
from gateway.store.correlation import CorrelationMixin
from gateway.store.inbox import INBOX_GROUP, InboxMixin
from gateway.store.keys import HOUR_MS, REF_BUCKETS_HEX, Keys
from gateway.store.limits import LimitsMixin
from gateway.store.records import (
    FIELDS,
    STATUSES,
    Correlation,
    NewRequest,
    decode_record,
    now_ms,
    pack_targets,
    packed_id,
    ref_bucket,
    unpack_targets,
)
from gateway.store.requests import RequestsMixin
from gateway.store.sweeps import SweepsMixin

__all__ = [
    "FIELDS",
    "HOUR_MS",
    "INBOX_GROUP",
    "REF_BUCKETS_HEX",
    "STATUSES",
    "Correlation",
    "NewRequest",
    "Store",
    "decode_record",
    "now_ms",
    "pack_targets",
    "packed_id",
    "ref_bucket",
    "unpack_targets",
]


class Store(InboxMixin, RequestsMixin, CorrelationMixin, SweepsMixin, LimitsMixin):
    """Typed access to the gateway's Redis data; one instance per process, sharing one pool."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        dedup_ttl: int,
        retention: int,
        link_ttl: int | None = None,
        grace: int,
        nonce_window: int = 86400,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.dedup_ttl = dedup_ttl
        self.retention = retention
        # How long a request's record and its status links outlive it (late callbacks find it).
        self.link_ttl = link_ttl or retention
        self.grace = grace
        self.nonce_window = nonce_window
        self.inbox = self.keys.inbox
        self._ingest = scripts.load(redis, "ingest")
        self._ingest_forget = scripts.load(redis, "ingest_forget")
        self._submit = scripts.load(redis, "submit")
        self._correlate = scripts.load(redis, "correlate")
        self._callback_dup = scripts.load(redis, "callback_dup")
        self._expire = scripts.load(redis, "expire")
        self._release = scripts.load(redis, "release")
        self._idem_claim = scripts.load(redis, "idem_claim")
        self._rate = scripts.load(redis, "rate")
        self._forget_consumer = scripts.load(redis, "forget_consumer")

    def key(self, *parts: str) -> str:
        """A key from its parts as the map spells them (``Keys.key``)."""
        return self.keys.key(*parts)
