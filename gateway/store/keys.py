"""Every Redis key the gateway uses: the map of its data, and the only place key names are built.

All keys but arq's start with ``GATEWAY_KEY_PREFIX`` (``p`` below; default ``cg:``, tests use a
unique one). ``ckey`` is a *correlation key* (``gateway.domain.callbacks``): ``api:<api_id>`` for
async results, ``ref:<ref>`` for results that carry only the gateway's reference from the callback
URL (resolved through ``refs:``), ``msg:<MessageUUID>`` / ``call:<RequestUUID>`` for status
callbacks, ``none:<cb_id>`` for callbacks with nothing to correlate on. "retention" is
``GATEWAY_RETENTION``.

Receive path: requests, callbacks, correlation (``gateway.store.core`` and its modules)

| key                         | type   | TTL                     | written by           | read by            |
|-----------------------------|--------|-------------------------|----------------------|--------------------|
| ``req:{api_id}``            | hash   | deadline + retention;   | submit, correlate,   | status API,        |
|                             |        | once finished:          | timeout sweep        | worker, timeout    |
|                             |        | retention from then     |                      | sweep              |
| ``reqevents:{api_id}``      | list   | retention (renewed per  | emit                 | status API         |
|                             |        | event)                  |                      |                    |
| ``requests:{status}``       | zset   | none (trimmed by the    | submit, correlate,   | list API, /metrics |
|                             |        | sweep)                  | timeout sweep        |                    |
| ``due``                     | zset   | none (members popped)   | submit, timeout      | timeout sweep      |
|                             |        |                         | sweep                |                    |
| ``due:{timeout_s}``         | list   | none (popped when due)  | submit               | timeout sweep      |
| ``refs:{hour}:{h}``         | hash   | retention from its last | submit               | correlate          |
|                             |        | write                   |                      | (``ref:``)         |
| ``link:{ckey}``             | hash   | GATEWAY_LINK_TTL from   | correlate (``a``:    | correlate          |
|                             |        | its last write          | api_id; ``q``, ``c``:|                    |
|                             |        |                         | last status seq, cb) |                    |
| ``dedup:{period}:{sub}``    | hash   | until the end of the    | ingest (receiver)    | ingest;            |
|                             |        | next period (period:    |                      | ingest_forget (no  |
|                             |        | GATEWAY_DEDUP_TTL)      |                      | quorum)            |
| ``nonce:{period}:{sub}``    | hash   | as ``dedup`` (period:   | ingest (receiver)    | ingest;            |
|                             |        | GATEWAY_NONCE_WINDOW)   |                      | ingest_forget      |
| ``inbox``                   | stream | entries XDEL'd when     | ingest, submit,      | worker (group      |
|                             |        | acknowledged            | correlate, sweeps    | ``correlate``)     |
| ``inbox_failed``            | stream | none (MAXLEN ~100,000)  | worker (undecodable  | /metrics,          |
|                             |        |                         | entries)             | operators          |
| ``park:{ckey}``             | list   | grace + retention       | correlate            | submit, correlate, |
|                             |        |                         |                      | unmatched sweep    |
| ``unmatched``               | zset   | none (popped when due)  | correlate, submit    | unmatched sweep    |
| ``unmatched_log``           | zset   | none (trimmed by the    | correlate (final)    | unmatched API      |
|                             |        | sweep)                  |                      |                    |
| ``state:{ckey}``            | hash   | (read once, then        | gateways before      | correlate (folded  |
|                             |        | deleted)                | links were hashes    | into its link)     |
| ``idem:{key_id}``           | hash   | lease, then             | submit               | submit             |
|                             |        | GATEWAY_IDEMPOTENCY_TTL | (Idempotency-Key)    |                    |
| ``rate:{name}``             | zset   | the window              | upstream rate        | the same (1        |
|                             |        |                         | limiter              | script)            |
| ``webhook_secret``          | string | none                    | first start (SET NX) | API, worker        |
| ``notify``                  | pubsub | (pub/sub, nothing       | emit (PUBLISH        | API (GET ?wait=,   |
|                             |        | stored)                 | api_id)              | SSE)               |
| ``archive``                 | zset   | none (members removed   | submit, emit,        | archiver (worker), |
|                             |        | once copied)            | record, rearm        | API (backlog,      |
|                             |        |                         |                      | lists)             |
| ``archive_backfilled``      | string | none                    | archiver (once: what | archiver           |
|                             |        |                         | Redis held before    |                    |
|                             |        |                         | history existed)     |                    |
| ``cbs:{api_id|event_id}``   | list   | GATEWAY_LINK_TTL (the   | correlate,           | archiver           |
|                             |        | hot retention once      | callback_dup         |                    |
|                             |        | copied and settled)     |                      |                    |

Fan-out and delivery: events, deliveries, subscriptions (``gateway.store.delivery`` and its modules)

| key                         | type   | TTL                     | written by           | read by            |
|-----------------------------|--------|-------------------------|----------------------|--------------------|
| ``evt:{event_id}``          | string | retention (kept while a | emit                 | status API,        |
|                             |        | delivery waits:         |                      | worker, unmatched  |
|                             |        | ``keep``)               |                      | API                |
| ``evtdlv:{event_id}``       | set    | retention               | emit                 | replay API         |
| ``dlv:{delivery_id}``       | hash   | retention after a write | emit, record, rearm, | worker, API        |
|                             |        |                         | defer                |                    |
| ``dlvlog:{delivery_id}``    | list   | retention after a       | record               | deliveries API     |
|                             |        | write; at most          |                      |                    |
|                             |        | ``LOG_MAX`` entries     |                      |                    |
| ``deliveries``              | zset   | members trimmed by      | emit                 | deliveries API     |
|                             |        | score                   |                      |                    |
| ``deliveries:status:{s}``   | zset   | members trimmed by      | emit, record, rearm  | API, bulk replay   |
|                             |        | score                   |                      |                    |
| ``deliveries:sub:{sub_id}`` | zset   | trimmed; retention once | emit                 | API, bulk replay   |
|                             |        | the subscription is     |                      |                    |
|                             |        | deleted                 |                      |                    |
| ``deliveries:type:{t}``     | zset   | members trimmed by      | emit                 | deliveries API     |
|                             |        | score                   |                      |                    |
| ``lease:{delivery_id}``     | string | attempt timeout +       | begin                | finish (if ours)   |
|                             |        | margin                  |                      |                    |
| ``sub:{sub_id}``            | hash   | none (DEL on delete)    | API, settle          | worker, API        |
|                             |        |                         | (disable)            |                    |
| ``subs``                    | zset   | none (ZREM on delete)   | API                  | list API, /metrics |
| ``subs:type:{t}``           | set    | none (SREM on delete)   | API, settle          | fan-out (match)    |
|                             |        |                         | (disable)            |                    |
| ``breaker:{sub_id}``        | hash   | window + cooldown + 1 h | admit, settle        | admit, settle      |
| ``breakers:{state}``        | zset   | none (members: subs,    | admit, settle, API   | /metrics           |
|                             |        | scored by their         |                      |                    |
|                             |        | breaker's expiry)       |                      |                    |
| ``bucket:{sub_id}``         | hash   | refill time + 60 s      | admit                | admit              |
| ``inflight:{sub_id}``       | zset   | 2 x slot TTL            | admit, settle        | admit              |
| ``ops``                     | stream | none (MAXLEN ~10,000)   | settle (disable)     | operators          |
| ``queue``                   | zset   | arq's                   | record, defer,       | the gateway's arq  |
|                             |        |                         | rearm, finish        | worker             |

Front door and operations (``gateway.store.frontdoor``, ``gateway.store.ops``)

| key                         | type   | TTL                     | written by           | read by            |
|-----------------------------|--------|-------------------------|----------------------|--------------------|
| ``apirate:{caller}``        | string | GATEWAY_API_RATE_WINDOW | every API request    | the same (1        |
|                             |        |                         |                      | script)            |
| ``ptok:{token_id}``         | hash   | none (deleted on        | proxy_tokens API     | proxy auth         |
|                             |        | revoke)                 |                      |                    |
| ``workers``                 | zset   | WORKER_HEARTBEAT_TTL    | worker heartbeat     | /readyz, /metrics  |

arq's own keys, unprefixed, named by ``arq.constants``: ``arq:job:{job_id}`` (the job, run time +
1 day, as arq sets it) and ``arq:result:{job_id}``. The delivery scripts write jobs in arq's format
straight into ``p queue`` or a queue target's queue (skipped when the job or its result exists, as
``enqueue_job`` does); arq's worker reads them.

How names are built: in Python, only through ``Keys`` (one instance per store, from the prefix).
Scripts that know their keys up front get them as ``KEYS``. Scripts that derive keys from what they
read (correlate resolves a link before it knows the request key; the delivery scripts read a
delivery's subscription) get the prefix as an argument and join the fragments below to it: the
script loader (``gateway.store.scripts``) writes each ``{{NAME}}`` of a ``.lua`` file as the Lua
string of ``LUA_NAMES[NAME]`` when it loads the script, so a fragment is spelt here only.
(A Redis Cluster deployment would keep all keys in one slot with a hash-tagged prefix.)
"""

from __future__ import annotations

import hashlib

from arq import constants as arq_constants

# Key-name fragments, each the start of a key after the prefix (or the whole name).
REQ = "req:"
REQEVENTS = "reqevents:"
REQUESTS = "requests:"
DUE = "due"
DUE_QUEUE = "due:"
REFS = "refs:"
LINK = "link:"
DEDUP = "dedup:"
NONCE = "nonce:"
MARK_SUB_HEX = 3  # dedup/nonce buckets of a period: 16**3 small hashes (lua/lib/seen.lua)
INBOX = "inbox"
INBOX_FAILED = "inbox_failed"
PARK = "park:"
UNMATCHED = "unmatched"
UNMATCHED_LOG = "unmatched_log"
STATE = "state:"
IDEM = "idem:"
RATE = "rate:"
WEBHOOK_SECRET = "webhook_secret"  # noqa: S105 (a key name)
NOTIFY = "notify"
ARCHIVE = "archive"
ARCHIVE_BACKFILLED = "archive_backfilled"
CBS = "cbs:"
DUPLICATES_LOGGED = 3  # duplicates of one callback that history lists (ingest counts the rest)
EVT = "evt:"
EVTDLV = "evtdlv:"
DLV = "dlv:"
DLVLOG = "dlvlog:"
DELIVERIES = "deliveries"
DELIVERIES_STATUS = "deliveries:status:"
DELIVERIES_SUB = "deliveries:sub:"
DELIVERIES_TYPE = "deliveries:type:"
LEASE = "lease:"
SUB = "sub:"
SUBS = "subs"
SUBS_TYPE = "subs:type:"
BREAKER = "breaker:"
BREAKERS = "breakers:"
BUCKET = "bucket:"
INFLIGHT = "inflight:"
OPS = "ops"
QUEUE = "queue"
APIRATE = "apirate:"
PTOK = "ptok:"
WORKERS = "workers"

# arq's key prefixes, from arq itself.
ARQ_JOB = arq_constants.job_key_prefix
ARQ_RESULT = arq_constants.result_key_prefix
ARQ_JOB_TTL_MS = arq_constants.expires_extra_ms  # a job not started within a day of its run time expires

REF_BUCKETS_HEX = 3  # 4,096 ref buckets per hour
HOUR_MS = 3_600_000

LOG_MAX = 100  # attempts kept per delivery in ``dlvlog:`` (the schedule has 10 by default; replays add more)

# What ``{{NAME}}`` stands for in a ``.lua`` file (gateway.store.scripts).
LUA_NAMES: dict[str, str | int] = {
    "REQ": REQ,
    "REQEVENTS": REQEVENTS,
    "REQUESTS": REQUESTS,
    "DUE": DUE,
    "DUE_QUEUE": DUE_QUEUE,
    "REFS": REFS,
    "LINK": LINK,
    "INBOX": INBOX,
    "PARK": PARK,
    "UNMATCHED": UNMATCHED,
    "UNMATCHED_LOG": UNMATCHED_LOG,
    "STATE": STATE,
    "NOTIFY": NOTIFY,
    "ARCHIVE": ARCHIVE,
    "CBS": CBS,
    "DUPLICATES_LOGGED": DUPLICATES_LOGGED,
    "DEDUP": DEDUP,
    "NONCE": NONCE,
    "MARK_SUB_HEX": MARK_SUB_HEX,
    "EVT": EVT,
    "EVTDLV": EVTDLV,
    "DLV": DLV,
    "DLVLOG": DLVLOG,
    "DELIVERIES": DELIVERIES,
    "DELIVERIES_STATUS": DELIVERIES_STATUS,
    "DELIVERIES_SUB": DELIVERIES_SUB,
    "DELIVERIES_TYPE": DELIVERIES_TYPE,
    "LEASE": LEASE,
    "SUB": SUB,
    "SUBS": SUBS,
    "SUBS_TYPE": SUBS_TYPE,
    "BREAKER": BREAKER,
    "BREAKERS": BREAKERS,
    "BUCKET": BUCKET,
    "INFLIGHT": INFLIGHT,
    "OPS": OPS,
    "ARQ_JOB": ARQ_JOB,
    "ARQ_RESULT": ARQ_RESULT,
    "ARQ_JOB_TTL_MS": ARQ_JOB_TTL_MS,
    "LOG_MAX": LOG_MAX,
}


def ref_bucket(ref: str, at_ms: int) -> str:
    """``refs:{hour}:{h}`` (unprefixed): ``h`` the first three hex digits of sha1(ref), as the
    scripts' ``ref_lookup`` (lua/lib/ref_lookup.lua) computes it."""
    digest = hashlib.sha1(ref.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"{REFS}{at_ms // HOUR_MS}:{digest[:REF_BUCKETS_HEX]}"


class Keys:
    """The key names under one prefix: ``keys.req(api_id)``, ``keys.inbox``, ..."""

    def __init__(self, prefix: str) -> None:
        p = self.prefix = prefix
        self.due = p + DUE
        self.inbox = p + INBOX
        self.inbox_failed = p + INBOX_FAILED
        self.unmatched = p + UNMATCHED
        self.unmatched_log = p + UNMATCHED_LOG
        self.webhook_secret = p + WEBHOOK_SECRET
        self.notify_channel = p + NOTIFY
        self.archive = p + ARCHIVE
        self.archive_backfilled = p + ARCHIVE_BACKFILLED
        self.deliveries = p + DELIVERIES
        self.subs = p + SUBS
        self.ops = p + OPS
        self.queue = p + QUEUE  # the gateway's own arq queue
        self.workers = p + WORKERS

    def key(self, *parts: str) -> str:
        """A key from its parts as the map spells them (``key("dlv", id)``), for tools and tests
        that address keys generically; the code uses the named builders."""
        return self.prefix + ":".join(parts)

    # receive path
    def req(self, api_id: str) -> str:
        return self.prefix + REQ + api_id

    def reqevents(self, api_id: str) -> str:
        return self.prefix + REQEVENTS + api_id

    def cbs(self, owner: str) -> str:
        """The callback log of a request (its api_id) or of an unmatched callback (its event id)."""
        return self.prefix + CBS + owner

    def requests(self, status: str) -> str:
        return self.prefix + REQUESTS + status

    def due_queue(self, timeout_s: int) -> str:
        return self.prefix + DUE_QUEUE + str(timeout_s)

    def refs(self, ref: str, at_ms: int) -> str:
        """The bucket keeping ``ref`` -> api_id for a request submitted at ``at_ms``."""
        return self.prefix + ref_bucket(ref, at_ms)

    def dedup(self, cb_id: str, period: int) -> tuple[str, str]:
        """The bucket (hash) and field of ``cb_id``'s dedup mark in ``period`` (floor(time /
        GATEWAY_DEDUP_TTL)), as lua/lib/seen.lua writes them."""
        return f"{self.prefix}{DEDUP}{period}:{cb_id[:MARK_SUB_HEX]}", cb_id[MARK_SUB_HEX:]

    def nonce(self, nonce_id: str, period: int) -> tuple[str, str]:
        """The bucket and field of a nonce in ``period`` (floor(time / GATEWAY_NONCE_WINDOW))."""
        sub = hashlib.sha1(nonce_id.encode(), usedforsecurity=False).hexdigest()[:MARK_SUB_HEX]
        return f"{self.prefix}{NONCE}{period}:{sub}", nonce_id

    def park(self, ckey: str) -> str:
        return self.prefix + PARK + ckey

    def idem(self, key_id: str) -> str:
        return self.prefix + IDEM + key_id

    def rate(self, name: str) -> str:
        return self.prefix + RATE + name

    # fan-out and delivery
    def evt(self, event_id: str) -> str:
        return self.prefix + EVT + event_id

    def evtdlv(self, event_id: str) -> str:
        return self.prefix + EVTDLV + event_id

    def dlv(self, delivery_id: str) -> str:
        return self.prefix + DLV + delivery_id

    def dlvlog(self, delivery_id: str) -> str:
        return self.prefix + DLVLOG + delivery_id

    def deliveries_status(self, status: str) -> str:
        return self.prefix + DELIVERIES_STATUS + status

    def deliveries_sub(self, sub_id: str) -> str:
        return self.prefix + DELIVERIES_SUB + sub_id

    def deliveries_type(self, event_type: str) -> str:
        return self.prefix + DELIVERIES_TYPE + event_type

    def lease(self, delivery_id: str) -> str:
        return self.prefix + LEASE + delivery_id

    def sub(self, sub_id: str) -> str:
        return self.prefix + SUB + sub_id

    def breaker(self, sub_id: str) -> str:
        return self.prefix + BREAKER + sub_id

    def breakers(self, state: str) -> str:
        return self.prefix + BREAKERS + state

    # front door
    def apirate(self, caller: str) -> str:
        return self.prefix + APIRATE + caller

    def ptok(self, token_id: str) -> str:
        return self.prefix + PTOK + token_id
