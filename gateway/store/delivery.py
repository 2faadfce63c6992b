"""``DeliveryStore``: the fan-out path's data (events, deliveries, their attempts, subscriptions and
their limits), one instance per process sharing one pool. Each concern is a module of its own;
``DeliveryStore`` puts them together and loads their scripts once:

* ``gateway.store.events``: events and delivery records, the deliveries API's reads, re-arming;
* ``gateway.store.attempts``: an attempt's ``begin`` and ``finish`` (the lease), deferral, records;
* ``gateway.store.subscriptions``: subscriptions, their type sets and secrets;
* ``gateway.store.admission``: a subscription's concurrency cap, token bucket and breaker;
* ``gateway.store.arqjobs``: arq's job format, as the scripts write jobs.

Scripts derive their keys from the prefix, as correlate does, because which keys they touch
depends on what they read (the subscription of a delivery, the event types of a subscription):
gateway.store.keys.
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.store import scripts
from gateway.store.admission import Admission, AdmissionMixin, BreakerPolicy
from gateway.store.arqjobs import ARQ_JOB_TTL_MS, DELIVER_JOB, OPERATOR_EVENT_JOB, deliver_payload
from gateway.store.attempts import AttemptLimits, AttemptRecord, AttemptsMixin, Begun
from gateway.store.events import AttemptLog, DeliveryQuery, DeliveryRecord, EventsMixin, encode_event
from gateway.store.keys import LOG_MAX, Keys
from gateway.store.subscriptions import SubscriptionsMixin

__all__ = [
    "ARQ_JOB_TTL_MS",
    "DELIVER_JOB",
    "LOG_MAX",
    "OPERATOR_EVENT_JOB",
    "Admission",
    "AttemptLimits",
    "AttemptLog",
    "AttemptRecord",
    "Begun",
    "BreakerPolicy",
    "DeliveryQuery",
    "DeliveryRecord",
    "DeliveryStore",
    "deliver_payload",
    "encode_event",
]


class DeliveryStore(EventsMixin, AttemptsMixin, SubscriptionsMixin, AdmissionMixin):
    """Events, delivery records and their attempts, subscriptions and their limits."""

    def __init__(self, redis: Redis, prefix: str, *, retention: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.retention = retention
        self.queue = self.keys.queue  # the gateway's own arq queue (workers.main.queue_name)
        self._record = scripts.load(redis, "record")
        self._defer = scripts.load(redis, "defer")
        self._rearm = scripts.load(redis, "rearm")
        self._query = scripts.load(redis, "query")
        self._sub_create = scripts.load(redis, "sub_create")
        self._sub_delete = scripts.load(redis, "sub_delete")
        self._sub_match = scripts.load(redis, "sub_match", read_only=True)
        self._sub_rotate = scripts.load(redis, "sub_rotate")
        self._sub_enable = scripts.load(redis, "sub_enable")
        self._begin = scripts.load(redis, "begin")
        self._emit_begin = scripts.load(redis, "emit_begin")
        self._finish = scripts.load(redis, "finish")
        self._ack = scripts.load(redis, "ack")

    def key(self, *parts: str) -> str:
        """A key from its parts as the map spells them (``Keys.key``)."""
        return self.keys.key(*parts)
