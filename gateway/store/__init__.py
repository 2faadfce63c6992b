"""Everything the gateway keeps in Redis, and every script that changes more than one key.

All keys start with ``GATEWAY_KEY_PREFIX`` (default ``cg:``; tests use a unique one). ``ckey`` is a
*correlation key*: ``api:<api_id>`` for async results, ``ref:<ref>`` for results that only carry the
gateway's own reference from the callback URL, ``msg:<MessageUUID>`` / ``call:<RequestUUID>`` for
status callbacks, ``none:<cb_id>`` for callbacks with nothing to correlate on.

| key                    | type   | TTL                        | written by            | read by            |
|------------------------|--------|----------------------------|-----------------------|--------------------|
| ``req:{api_id}``       | hash   | deadline + retention       | submit, correlate     | status API, worker |
| ``reqevents:{api_id}`` | list   | retention                  | emit                  | status API         |
| ``requests``           | zset   | none (trimmed by sweep)    | submit                | list API           |
| ``deadlines``          | zset   | none (popped when due)     | submit, correlate     | timeout sweep      |
| ``link:{ckey}``        | string | retention                  | submit, correlate     | correlate          |
| ``dedup:{cb_id}``      | string | ``GATEWAY_DEDUP_TTL``      | ingest                | ingest             |
| ``inbox``              | stream | entries XDEL'd when acked  | ingest, submit        | worker (group)     |
| ``park:{ckey}``        | list   | grace + retention          | correlate             | submit, correlate  |
| ``unmatched``          | zset   | none (popped when due)     | correlate             | unmatched sweep    |
| ``state:{ckey}``       | hash   | retention                  | correlate             | correlate          |
| ``evt:{event_id}``     | string | retention                  | emit                  | status API, worker |
| ``dlv:{delivery_id}``  | hash   | retention                  | emit, worker          | deliveries API     |
| ``webhook_secret``     | string | none                       | first start (SET NX)  | worker             |
| ``workers``            | zset   | ``WORKER_HEARTBEAT_TTL``   | worker heartbeat      | /readyz, /metrics  |
| ``apirate:{caller}``   | string | ``GATEWAY_API_RATE_WINDOW``| API key dependency    | the same (1 script)|
| ``ptok:{token_id}``    | hash   | none (deleted on revoke)   | proxy_tokens API      | proxy auth         |

Inbox entries have one field ``e``: the callback as JSON (``cb`` id, ``at`` ms, ``m`` method, ``q`` raw
query, ``enc`` encoding, ``p`` params). A parked callback is that same JSON, so moving it back into
the inbox is a plain XADD.

Flow and why it is safe against a crash between any two steps:

1. ``ingest`` (receiver, one round trip): ``SET dedup NX`` then ``XADD inbox``. The 200 is sent only
   after it returns, so an acknowledged callback is in the inbox. A duplicate finds the dedup key.
2. ``correlate`` (worker): resolves the ckey to a request and either completes/links it or parks the
   callback, atomically. Re-running it for the same callback id is harmless (``result_cb`` records
   which callback completed a request; a replayed one reports ``replay``).
3. ``emit`` (worker): ``SET evt NX`` and the delivery records, atomically. Event ids derive from
   the callback id, so a replay finds the event and only the not-yet-succeeded deliveries remain.
4. Only after delivery (or scheduling of a retry) is the inbox entry XACK'd and XDEL'd. A worker that
   dies before that leaves it pending in the group; another worker claims it (XAUTOCLAIM).

``submit`` stores the request and, in the same script, moves anything parked under its ``api:`` or
``ref:`` ckey back into the inbox: whichever of submit and callback runs first, exactly one
correlation completes the request.

The front door's keys (``apirate:``, ``ptok:``) are described in ``gateway.store.frontdoor``.
"""

from gateway.store.core import INBOX_GROUP, Correlation, NewRequest, Store, now_ms
from gateway.store.delivery import DeliveryStore
from gateway.store.frontdoor import FrontDoorStore

__all__ = ["INBOX_GROUP", "Correlation", "DeliveryStore", "FrontDoorStore", "NewRequest", "Store", "now_ms"]
