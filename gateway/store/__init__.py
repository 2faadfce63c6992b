"""Everything the gateway keeps in Redis, and every script that changes more than one key.

Every key, its type, TTL, writer and reader: ``gateway.store.keys`` (the map, and the only place
key names are built). The scripts are ``.lua`` files in ``lua/`` (the functions several share in
``lua/lib/``), loaded and called with named arguments by ``gateway.store.scripts``. ``Store``
(``gateway.store.core``) holds the receive path, ``DeliveryStore`` (``gateway.store.delivery``) the
fan-out path, each put together from one module per concern; ``OpsStore`` (heartbeats, /metrics)
and ``FrontDoorStore`` (API rate limits, proxy tokens) are small enough to be one each.

What a pending request costs is most of Redis' memory, so its keys are compact (figures in
docs/performance.md):

* ``req:{api_id}`` has one-letter fields (``gateway.store.records.FIELDS``), and fields holding their
  default are absent: ``s`` status (absent: pending), ``m`` method (absent: POST), ``r`` resource,
  ``d`` metadata JSON, ``t`` targets JSON (a POST webhook is just its URL), ``a`` submitted_at ms,
  ``p`` traceparent; once finished also ``x`` the completing inbox entry, ``b`` its callback id,
  ``c`` completed_at, ``o`` timed_out_at. The store hands records out under the long names.
* ``requests:{status}`` (``pending``, ``completed``, ``timed_out``; score submitted_at) are the only
  request indexes (the lists read PostgreSQL and the archive's changed requests:
  gateway.services.history_reads).
* Deadlines: ``due:{timeout_s}`` lists the requests submitted with that timeout in submit order, which
  is deadline order; the ``due`` zset holds each list's head deadline (member: the timeout). The
  sweep pops only what is due. A finished request's entry is not removed; the sweep skips it.
* ``refs:{hour}:{h}`` maps a ref (the ``cg_ref`` of our callback URL) to its api_id: ``hour`` of the
  submit, ``h`` the first three hex digits of sha1(ref) (4,096 small hashes per hour, which Redis
  keeps in its compact listpack encoding). A lookup walks the live hours newest first.
* Due queues and ref buckets hold a UUID api_id as 17 bytes (NUL + the UUID's 16), any other
  api_id as it is.

Inbox entries have one field ``e``: the callback as JSON (``cb`` id, ``at`` ms, ``m`` method, ``q`` raw
query, ``enc`` encoding, ``p`` params). A parked callback is that same JSON, so moving it back into
the inbox is a plain XADD.

Flow and why it is safe against a crash between any two steps:

1. ``ingest`` (receiver, one round trip): the dedup mark (a field of a time-bucketed hash,
   lua/lib/seen.lua) then ``XADD inbox``. The 200 is sent only after it returns, so an acknowledged
   callback is in the inbox. A duplicate finds the dedup mark.
2. ``correlate`` (worker): resolves the ckey to a request and either completes/links it or parks the
   callback, atomically. Re-running it for the same callback id is harmless (``result_cb``, field
   ``b``, records which callback completed a request; a replayed one reports ``replay``).
3. ``emit_begin`` (worker): ``SET evt NX`` and the delivery records, atomically, with the start of
   each first attempt. Event ids derive from
   the callback id, so a replay finds the event and only the not-yet-succeeded deliveries remain.
4. Only after delivery (or scheduling of a retry) is the inbox entry XACK'd and XDEL'd. A worker that
   dies before that leaves it pending in the group; another worker claims it (XAUTOCLAIM).

``submit`` stores the request and, in the same script, moves anything parked under its ``api:`` or
``ref:`` ckey back into the inbox: whichever of submit and callback runs first, exactly one
correlation completes the request.
"""

from redis.asyncio import Redis

from gateway.settings import Settings
from gateway.store.core import INBOX_GROUP, Correlation, NewRequest, Store, now_ms
from gateway.store.delivery import DeliveryStore
from gateway.store.frontdoor import FrontDoorStore

__all__ = [
    "INBOX_GROUP",
    "Correlation",
    "DeliveryStore",
    "FrontDoorStore",
    "NewRequest",
    "Store",
    "make_delivery_store",
    "make_store",
    "now_ms",
]


def make_delivery_store(settings: Settings, redis: Redis) -> DeliveryStore:
    return DeliveryStore(redis, settings.GATEWAY_KEY_PREFIX, retention=settings.GATEWAY_RETENTION)


def make_store(settings: Settings, redis: Redis) -> Store:
    return Store(
        redis,
        settings.GATEWAY_KEY_PREFIX,
        dedup_ttl=settings.GATEWAY_DEDUP_TTL,
        retention=settings.GATEWAY_RETENTION,
        link_ttl=settings.GATEWAY_LINK_TTL,
        grace=settings.GATEWAY_UNMATCHED_GRACE,
        nonce_window=settings.GATEWAY_NONCE_WINDOW,
    )
