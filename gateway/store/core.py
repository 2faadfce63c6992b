"""Requests, callbacks and correlation: the scripts of the receive path (map in gateway.store).

Memory, measured with redis-server 7.0.15 (``hash-max-listpack-value 1024``) and the ``INFO memory``
delta over 100,000 pending requests with 100 B of metadata and one webhook target:

* ``callback-gateway bench --phases memory``: 548 B per pending request (it was 1,148 B);
  ``python tests/bench/memory_costs.py`` (16-character refs, as the API mints them): 552 B
  (it was 1,293 B). By ``MEMORY USAGE``: the ``req`` hash 280 B (was 472), its
  ``requests:pending`` entry 136 B, its ``due:{timeout}`` entry 19 B and its ``refs`` bucket entry
  39-44 B (they replace the ``requests`` and ``deadlines`` entries, ~140 B each, and the 120 B
  ``link:ref`` key with its expiry entry);
* the timeout sweep pops what is due and reads nothing else: 1,000 due of 1,000,000 pending in
  ~10 ms of Redis time, the same as 1,000 due of 10,000;
* a stored callback: 394 B on an empty Redis for its ``dedup`` and ``nonce`` keys (88 B each by
  ``MEMORY USAGE``, the rest the expiry table and the growth of Redis' key table), plus its
  inbox entry until a worker acknowledges it.

Fewer pending requests cost a little more each (600 B at 10,000 submitted within an hour: the
4,096 ref buckets of the hour are then sparse). Everything per request or per callback has a TTL
(retention, dedup window, nonce window); the indexes are trimmed by the sweep and the deadline
queues drained by it, so memory follows traffic x retention, not the age of the system.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.domain.signing import new_webhook_secret
from gateway.store.keys import Keys

INBOX_GROUP = "correlate"

# KEYS: dedup, inbox, nonce (or ''). ARGV: dedup_ttl_s, entry_json, nonce_window_s.
# Returns 1 stored, 0 duplicate, -1 replayed nonce. A nonce is remembered only together with a
# stored callback: a callback we answered 503 for (nothing stored) may come back with its nonce.
_INGEST = """
if KEYS[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
  if KEYS[3] ~= '' then redis.call('SET', KEYS[3], '1', 'EX', ARGV[3]) end
  return 1
end
return 0
"""

# The request record ``req:{api_id}`` is a hash with one-letter fields (see ``FIELDS``): a pending
# request is mostly its metadata and targets, and long field names would be a fifth of it. Fields
# that hold their default are not written: no ``s`` is pending, no ``m`` is POST.
#
# Deadlines: one FIFO list ``due:{timeout_s}`` per timeout value, in submit order, so each list is
# in deadline order (deadline = ``a`` + timeout); the ``due`` zset holds each list's head deadline.
# An entry costs a list element (~45 B) instead of a skiplist node (~140 B); a finished request's
# entry stays until its deadline and is then popped and skipped.
#
# Ref links: ``refs:{hour}:{h}`` hashes, ``h`` the first 3 hex digits of sha1(ref), map ref ->
# api_id. Hourly generations expire whole (retention after their last write) and 4,096 buckets
# keep each small enough for Redis' listpack encoding (~60 B an entry, against ~180 B for a key of
# its own with a TTL). Looking a ref up walks the live hours, newest first.

# KEYS: req, requests:pending, due, due:{timeout}, inbox, unmatched, park:api, park:ref, refs bucket
# ARGV: retention_s, api_id, submitted_ms, deadline_ms, timeout_s, ref, packed api_id, then
#       field/value pairs
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[1]) * 1000)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if redis.call('RPUSH', KEYS[4], ARGV[7]) == 1 then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5]) end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[9], ARGV[6], ARGV[7])
  redis.call('EXPIRE', KEYS[9], ARGV[1])
end
local moved = 0
for i = 7, 8 do
  if KEYS[i] ~= '' then
    for _, entry in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
      redis.call('XADD', KEYS[5], '*', 'e', entry)
      moved = moved + 1
    end
    redis.call('DEL', KEYS[i])
  end
end
redis.call('ZREM', KEYS[6], 'api:' .. ARGV[2])
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[6], 'ref:' .. ARGV[6]) end
return 1 + moved
"""

# An api_id from a due queue or a ref bucket, where a canonical UUID is kept as 17 bytes
# (``packed_id``): NUL, then its 16 bytes.
_UNPACK_ID = """
local function unpack_id(v)
  if #v == 17 and string.byte(v, 1) == 0 then
    return string.format('%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x',
                         string.byte(v, 2, 17))
  end
  return v
end
"""

# Move a request between the per-status indexes (score: submitted_at).
_MOVE = """
local function move(p, api_id, from, to, submitted)
  redis.call('ZREM', p .. 'requests:' .. from, api_id)
  redis.call('ZADD', p .. 'requests:' .. to, submitted, api_id)
end
"""

# The api_id a ref was submitted under, or false: the live hourly generations, newest first (a
# callback usually follows its submit within the hour, so the first or second look finds it).
_REF_LOOKUP = """
local function ref_lookup(p, ref, now, ttl_s)
  local bucket = ':' .. string.sub(redis.sha1hex(ref), 1, 3)
  local newest = math.floor(now / 3600000) + 1
  local oldest = math.floor((now - ttl_s * 1000) / 3600000) - 1
  for hour = newest, oldest, -1 do
    local api_id = redis.call('HGET', p .. 'refs:' .. string.format('%d', hour) .. bucket, ref)
    if api_id then return unpack_id(api_id) end
  end
  return false
end
"""

# ARGV: prefix, ckey, cb_id, entry_json, now_ms, grace_ms, kind, seq, link_ttl_s, retention_s,
#       final ('1' when the grace period is over), ref (the callback URL's, or ''), then link ckeys
#       to create on completion. A result carrying both an api_id and a ref falls back to the ref
#       when no request has that api_id (one whose upstream reply was lost is kept under its ref)
#       and is parked under the ref, where both kinds of request look on submit.
# Keys are derived inside the script from the prefix because the request key is only known
# after resolving the link (a Redis Cluster deployment keeps all keys in one slot; see docs).
_CORRELATE = (
    _MOVE
    + _UNPACK_ID
    + _REF_LOOKUP
    + """
local p, ckey, cb, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, grace, kind, seq = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local link_ttl, retention, final, ref = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11], ARGV[12]
local api_id
if string.sub(ckey, 1, 4) == 'api:' then
  api_id = string.sub(ckey, 5)
elseif string.sub(ckey, 1, 4) == 'ref:' then
  api_id = ref_lookup(p, string.sub(ckey, 5), now, link_ttl)
elseif string.sub(ckey, 1, 5) ~= 'none:' then
  api_id = redis.call('GET', p .. 'link:' .. ckey)
end
local rkey = api_id and (p .. 'req:' .. api_id) or nil
if ref ~= '' and (not rkey or redis.call('EXISTS', rkey) == 0) then
  api_id = ref_lookup(p, ref, now, link_ttl)
  rkey = api_id and (p .. 'req:' .. api_id) or nil
end
if not rkey or redis.call('EXISTS', rkey) == 0 then
  if final == '1' then
    redis.call('ZADD', p .. 'unmatched_log', now, 'evt_' .. cb)
    return {'unmatched', '', '', '', '', ''}
  end
  local park = ref ~= '' and ('ref:' .. ref) or ckey
  local pkey = p .. 'park:' .. park
  redis.call('RPUSH', pkey, entry)
  redis.call('PEXPIRE', pkey, grace + retention * 1000)
  redis.call('ZADD', p .. 'unmatched', 'NX', now + grace, park)
  return {'parked', '', '', '', '', ''}
end
local info = redis.call('HMGET', rkey, 's', 'b', 'd', 't', 'r', 'a')
local status = info[1] or 'pending'
local outcome = 'matched'
if kind == 'result' then
  if info[2] == cb then
    outcome = 'replay'
  elseif status == 'completed' then
    outcome = 'extra'
  else
    if status == 'timed_out' then outcome = 'late' end
    redis.call('HSET', rkey, 's', 'completed', 'x', entry, 'b', cb, 'c', now)
    -- A finished request is kept for the retention period from now, not from its deadline.
    -- Its entry in due:{timeout} stays; the sweep skips it when its deadline comes.
    redis.call('EXPIRE', rkey, retention)
    move(p, api_id, status, 'completed', info[6])
    for i = 13, #ARGV do
      local lk = ARGV[i]
      redis.call('SET', p .. 'link:' .. lk, api_id, 'EX', link_ttl)
      local pk = p .. 'park:' .. lk
      for _, parked in ipairs(redis.call('LRANGE', pk, 0, -1)) do
        redis.call('XADD', p .. 'inbox', '*', 'e', parked)
      end
      redis.call('DEL', pk)
      redis.call('ZREM', p .. 'unmatched', lk)
    end
  end
elseif seq ~= '' then
  local skey = p .. 'state:' .. ckey
  local last = redis.call('HGET', skey, 'seq')
  if last and tonumber(last) > tonumber(seq) then
    outcome = 'stale'
  elseif last and tonumber(last) == tonumber(seq) and redis.call('HGET', skey, 'cb') ~= cb then
    outcome = 'stale'
  else
    redis.call('HSET', skey, 'seq', seq, 'cb', cb)
    redis.call('EXPIRE', skey, retention)
  end
end
return {outcome, api_id, status, info[3] or '', info[4] or '', info[5] or ''}
"""
)

# Requests whose deadline passed: mark them timed out and put a timeout entry in the inbox, so
# the event is produced (exactly once, whatever number of workers sweep) by the inbox consumer.
# Only the queues whose head is due are touched, and in each only the due entries and the first
# one that is not: O(log n + due), never a scan of what is pending. ARGV: prefix, now_ms, limit.
# Returns how many entries were popped (finished requests' entries are popped and skipped).
_EXPIRE = (
    _MOVE
    + _UNPACK_ID
    + """
local p, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local popped = 0
for _, timeout in ipairs(redis.call('ZRANGEBYSCORE', p .. 'due', '-inf', now, 'LIMIT', 0, limit)) do
  local queue, span, head = p .. 'due:' .. timeout, tonumber(timeout) * 1000, nil
  while popped < limit do
    local api_id = redis.call('LINDEX', queue, 0)
    if not api_id then break end
    api_id = unpack_id(api_id)
    local rkey = p .. 'req:' .. api_id
    local info = redis.call('HMGET', rkey, 's', 'a')
    if info[2] and tonumber(info[2]) + span > now then
      head = tonumber(info[2]) + span
      break
    end
    redis.call('LPOP', queue)
    popped = popped + 1
    if info[2] and (not info[1] or info[1] == 'unknown') then
      redis.call('HSET', rkey, 's', 'timed_out', 'o', now)
      move(p, api_id, info[1] or 'pending', 'timed_out', info[2])
      redis.call('XADD', p .. 'inbox', '*', 'e',
                 cjson.encode({t = 'timeout', api_id = api_id, at = now}))
    end
  end
  if head then
    redis.call('ZADD', p .. 'due', head, timeout)
  elseif redis.call('EXISTS', queue) == 0 then
    redis.call('ZREM', p .. 'due', timeout)
  end
end
return popped
"""
)

# KEYS: inbox. ARGV: group, consumer. Removes the consumer from the group only if it holds no
# entry: XGROUP DELCONSUMER drops the entries a consumer holds, and nobody would claim them again.
# Checked in the same script, so an entry read between a check and the delete cannot be lost.
_FORGET_CONSUMER = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Every status, newest first, from the per-status indexes (no all-statuses index is kept).
# KEYS: the per-status indexes. ARGV: offset, limit. Returns {total, api_id...}.
# Ranks across sets without reading what precedes the page: a binary search finds the score s
# with at most ``offset`` members above it, then each set gives its members from s down. Ties
# are ordered as one sorted set would order them (member, descending).
_LIST_ALL = """
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local total, lo, hi = 0, nil, nil
for _, k in ipairs(KEYS) do
  local n = redis.call('ZCARD', k)
  if n > 0 then
    total = total + n
    local low = tonumber(redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')[2])
    local high = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2])
    lo = math.min(lo or low, low)
    hi = math.max(hi or high, high)
  end
end
if offset >= total then return {total} end
local function above(s)
  local n = 0
  for _, k in ipairs(KEYS) do n = n + redis.call('ZCOUNT', k, '(' .. string.format('%.17g', s), '+inf') end
  return n
end
-- above(lo) > offset >= above(hi); scores are integers (ms), so the search ends at hi = lo + 1.
lo = math.floor(lo) - 1
while hi - lo > 1 do
  local mid = math.floor((lo + hi) / 2)
  if above(mid) > offset then lo = mid else hi = mid end
end
local skip = offset - above(hi)
local rows = {}
for _, k in ipairs(KEYS) do
  local got = redis.call('ZREVRANGEBYSCORE', k, string.format('%.17g', hi), '-inf', 'WITHSCORES',
                         'LIMIT', 0, skip + limit)
  for i = 1, #got, 2 do rows[#rows + 1] = {got[i], tonumber(got[i + 1])} end
end
table.sort(rows, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] > b[1]
end)
local out = {total}
for i = skip + 1, math.min(#rows, skip + limit) do out[#out + 1] = rows[i][1] end
return out
"""

# Parked callbacks whose grace period is over go back to the inbox marked final: if they still
# match nothing, the consumer turns them into callback.unmatched. ARGV: prefix, now_ms, limit.
_RELEASE = """
local p, now = ARGV[1], tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', p .. 'unmatched', '-inf', now, 'LIMIT', 0, ARGV[3])
for _, ckey in ipairs(due) do
  redis.call('ZREM', p .. 'unmatched', ckey)
  local pk = p .. 'park:' .. ckey
  for _, entry in ipairs(redis.call('LRANGE', pk, 0, -1)) do
    redis.call('XADD', p .. 'inbox', '*', 'e', entry, 'final', '1')
  end
  redis.call('DEL', pk)
end
return #due
"""

# Idempotent submits. KEYS: idem. ARGV: body_hash, lease_ms.
# Returns {'claimed'} for the first caller, else {state, body_hash, status, response, pttl_ms}.
_IDEM_CLAIM = """
if redis.call('HSETNX', KEYS[1], 'state', 'in_progress') == 1 then
  redis.call('HSET', KEYS[1], 'body', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {'claimed'}
end
local r = redis.call('HMGET', KEYS[1], 'state', 'body', 'status', 'response')
return {r[1] or '', r[2] or '', r[3] or '', r[4] or '', redis.call('PTTL', KEYS[1])}
"""

# Shared sliding-window limiter: at most ARGV[2] grants in any ARGV[3] ms. KEYS: limiter zset.
# ARGV: now_ms, limit, window_ms, member. Returns 0 when granted, else ms to wait.
_RATE = """
local now, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""

# ``unknown``: sent upstream, no usable answer (gateway.services.upstream.OutcomeUnknown); kept under its ref,
# it completes if its callback comes and times out like a pending request if none does.
STATUSES = ("pending", "completed", "timed_out", "unknown")

# Logical field name (what callers of the store see) -> field inside ``req:{api_id}``.
FIELDS = {
    "status": "s",  # absent while pending
    "method": "m",  # absent when POST
    "resource": "r",
    "metadata": "d",  # JSON, absent when {}
    "targets": "t",  # compact JSON (pack_targets), absent when []
    "submitted_at": "a",  # ms
    "traceparent": "p",  # absent when tracing is off
    "result": "x",  # the inbox entry that completed the request
    "result_cb": "b",  # its callback id
    "completed_at": "c",  # ms
    "timed_out_at": "o",  # ms
    "upstream_error": "e",  # why the outcome is unknown (status unknown only)
}
_DEFAULTS = {"status": "pending", "method": "POST", "metadata": "{}", "targets": "[]"}
REF_BUCKETS_HEX = 3  # 4,096 ref buckets per hour
HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def pack_targets(targets: list[dict[str, Any]]) -> str:
    """Targets as stored: a POST webhook (the usual target) is just its URL."""
    packed: list[Any] = []
    for target in targets:
        plain = target.get("type") == "webhook" and isinstance(target.get("url"), str)
        if plain and set(target) <= {"type", "url", "method"} and target.get("method", "POST") == "POST":
            packed.append(target["url"])
        else:
            packed.append(target)
    return json.dumps(packed, separators=(",", ":"))


def unpack_targets(raw: str) -> list[dict[str, Any]]:
    return [
        {"type": "webhook", "url": t, "method": "POST"} if isinstance(t, str) else t for t in json.loads(raw)
    ]


def decode_record(api_id: str, raw: dict[str, str]) -> dict[str, str]:
    """A stored record under the logical field names, defaults filled in (empty if none)."""
    if not raw:
        return {}
    record = {name: raw[short] for name, short in FIELDS.items() if short in raw}
    for name, default in _DEFAULTS.items():
        record.setdefault(name, default)
    record["targets"] = json.dumps(unpack_targets(record["targets"]), separators=(",", ":"))
    record["api_id"] = api_id
    return record


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def packed_id(api_id: str) -> str | bytes:
    """An api_id as the due queues and ref buckets keep it: Plivo's are UUIDs, 17 bytes instead of
    36 (``_UNPACK_ID`` reverses it). Anything else is kept as it is: api_ids are opaque."""
    if _CANONICAL_UUID.fullmatch(api_id):
        return b"\0" + uuid.UUID(api_id).bytes
    return api_id


def ref_bucket(ref: str, at_ms: int) -> str:
    """Where ``ref`` -> api_id is kept for a request submitted at ``at_ms`` (see _REF_LOOKUP)."""
    digest = hashlib.sha1(ref.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"refs:{at_ms // HOUR_MS}:{digest[:REF_BUCKETS_HEX]}"


@dataclass(frozen=True, slots=True)
class Correlation:
    outcome: str  # parked | matched | replay | extra | late | stale
    api_id: str
    previous_status: str
    metadata: dict[str, Any]
    targets: list[dict[str, Any]]
    resource: str


@dataclass(frozen=True, slots=True)
class NewRequest:
    api_id: str
    method: str
    resource: str
    params: dict[str, Any]
    metadata: dict[str, Any]
    targets: list[dict[str, Any]]
    timeout_s: int
    ref: str
    traceparent: str = ""  # W3C trace context of the submit (gateway.infra.tracing), "" when off
    status: str = "pending"  # or "unknown" (then api_id is the ref)
    upstream_error: str = ""


class Store:
    """Typed access to the gateway's Redis data; one instance per process, sharing one pool."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        dedup_ttl: int,
        retention: int,
        grace: int,
        nonce_window: int = 86400,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.dedup_ttl = dedup_ttl
        self.retention = retention
        self.grace = grace
        self.nonce_window = nonce_window
        self.inbox = self.keys.inbox
        self._ingest = redis.register_script(_INGEST)
        self._submit = redis.register_script(_SUBMIT)
        self._correlate = redis.register_script(_CORRELATE)
        self._expire = redis.register_script(_EXPIRE)
        self._release = redis.register_script(_RELEASE)
        self._idem_claim = redis.register_script(_IDEM_CLAIM)
        self._rate = redis.register_script(_RATE)
        self._list_all = redis.register_script(_LIST_ALL)
        self._forget_consumer = redis.register_script(_FORGET_CONSUMER)

    def key(self, *parts: str) -> str:
        return self.keys.key(*parts)

    # --- receiver -------------------------------------------------------------------------

    async def ingest(self, cb_id: str, entry_json: str, nonce_id: str = "") -> int:
        """Store a callback durably unless seen before: 1 stored, 0 duplicate, -1 replayed nonce."""
        keys = [self.key("dedup", cb_id), self.inbox, self.key("nonce", nonce_id) if nonce_id else ""]
        return int(await self._ingest(keys=keys, args=[self.dedup_ttl, entry_json, self.nonce_window]))

    async def ingest_replicated(
        self, cb_id: str, entry_json: str, nonce_id: str, replicas: int, timeout_ms: int
    ) -> tuple[int, int]:
        """``ingest``, then ``WAIT replicas timeout_ms`` on the same connection (a pipeline): WAIT
        counts the replicas that acknowledged this connection's writes. Returns (ingest result,
        replicas that acknowledged)."""
        keys = [self.key("dedup", cb_id), self.inbox, self.key("nonce", nonce_id) if nonce_id else ""]
        async with self.redis.pipeline(transaction=False) as pipe:
            await self._ingest(keys=keys, args=[self.dedup_ttl, entry_json, self.nonce_window], client=pipe)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            stored, acked = await pipe.execute()
        return int(stored), int(acked)

    # --- submit ---------------------------------------------------------------------------

    async def save_request(self, req: NewRequest) -> bool:
        submitted = now_ms()
        deadline = submitted + req.timeout_s * 1000
        fields: dict[str, str | int] = {"r": req.resource, "a": submitted}
        if req.method != "POST":
            fields["m"] = req.method
        if req.metadata:
            fields["d"] = json.dumps(req.metadata, separators=(",", ":"))
        if req.targets:
            fields["t"] = pack_targets(req.targets)
        if req.traceparent:
            fields["p"] = req.traceparent
        if req.status != "pending":
            fields["s"] = req.status
        if req.upstream_error:
            fields["e"] = req.upstream_error
        flat: list[str | int] = [v for pair in fields.items() for v in pair]
        keys = [
            self.key("req", req.api_id),
            self.key("requests", req.status),
            self.key("due"),
            self.key("due", str(req.timeout_s)),
            self.inbox,
            self.key("unmatched"),
            self.key("park", "api", req.api_id),
            self.key("park", "ref", req.ref) if req.ref else "",
            self.prefix + ref_bucket(req.ref, submitted) if req.ref else "",
        ]
        args = [
            self.retention,
            req.api_id,
            submitted,
            deadline,
            req.timeout_s,
            req.ref,
            packed_id(req.api_id),
            *flat,
        ]
        return bool(await self._submit(keys=keys, args=args))

    async def idempotency_claim(self, key_id: str, body_hash: str, lease_s: float) -> list[str]:
        """Claim an Idempotency-Key: ``['claimed']`` or what the first caller left there."""
        raw = await self._idem_claim(keys=[self.key("idem", key_id)], args=[body_hash, int(lease_s * 1000)])
        return [str(x) for x in raw]

    async def idempotency_finish(self, key_id: str, status: int, response: str, ttl_s: int) -> None:
        key = self.key("idem", key_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": "done", "status": status, "response": response})
            pipe.expire(key, ttl_s)
            await pipe.execute()

    async def idempotency_release(self, key_id: str) -> None:
        """Forget a claim whose request failed transiently, so that a retry may go ahead."""
        await self.redis.delete(self.key("idem", key_id))

    async def rate_acquire(self, name: str, limit: int, window_s: float, member: str) -> float:
        """Take one slot of a limiter shared by all processes; seconds to wait if none is free."""
        args: list[str | int] = [now_ms(), limit, int(window_s * 1000), member]
        wait_ms = await self._rate(keys=[self.key("rate", name)], args=args)
        return int(wait_ms) / 1000

    # --- worker ---------------------------------------------------------------------------

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
    ) -> Correlation:
        args: list[str | int] = [
            self.prefix,
            ckey,
            cb_id,
            entry_json,
            now_ms(),
            self.grace * 1000,
            kind,
            seq,
            self.retention,
            self.retention,
            "1" if final else "0",
            ref,
            *(links or []),
        ]
        raw = await self._correlate(keys=[], args=args)
        outcome, api_id, status, metadata, targets, resource = (str(x) for x in raw)
        return Correlation(
            outcome=outcome,
            api_id=api_id,
            previous_status=status,
            metadata=json.loads(metadata) if metadata else {},
            targets=unpack_targets(targets) if targets else [],
            resource=resource,
        )

    async def expire_due(self, limit: int = 1000) -> int:
        """Time out pending requests whose deadline passed; returns how many were due."""
        return int(await self._expire(keys=[], args=[self.prefix, now_ms(), limit]))

    async def release_unmatched(self, limit: int = 1000) -> int:
        """Send parked callbacks past their grace period back for a final correlation."""
        return int(await self._release(keys=[], args=[self.prefix, now_ms(), limit]))

    async def trim_indexes(self) -> None:
        """Drop index entries older than the retention period (the records themselves expire)."""
        cutoff = now_ms() - self.retention * 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in (*(f"requests:{s}" for s in STATUSES), "unmatched_log"):
                pipe.zremrangebyscore(self.key(name), "-inf", cutoff)
            await pipe.execute()

    async def request_fields(self, api_id: str, *fields: str) -> list[str | None]:
        """Fields of a request under their logical names (``FIELDS``); all None if there is none."""
        raw: list[str | None] = await self.redis.hmget(  # type: ignore[misc]
            self.key("req", api_id), ["a", *(FIELDS.get(f, f) for f in fields)]
        )
        if raw[0] is None:
            return [None] * len(fields)
        values: list[str | None] = []
        for name, value in zip(fields, raw[1:], strict=True):
            value = value if value is not None else _DEFAULTS.get(name)
            if name == "targets" and value is not None:
                value = json.dumps(unpack_targets(value), separators=(",", ":"))
            values.append(api_id if name == "api_id" else value)
        return values

    async def list_requests(
        self, status: str | None, limit: int, offset: int
    ) -> tuple[int, list[dict[str, str]]]:
        """Newest first; ``status`` picks one of the per-status indexes, None merges all three."""
        if status:
            index = self.key("requests", status)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcard(index)
                pipe.zrevrange(index, offset, offset + limit - 1)
                total, ids = await pipe.execute()
        else:
            keys = [self.key("requests", s) for s in STATUSES]
            total, *ids = await self._list_all(keys=keys, args=[offset, limit])
        async with self.redis.pipeline(transaction=False) as pipe:
            for api_id in ids:
                pipe.hgetall(self.key("req", api_id))
            raw = await pipe.execute()
        records = [decode_record(api_id, r) for api_id, r in zip(ids, raw, strict=True)]
        return int(total), [r for r in records if r]

    async def list_unmatched(self, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        index = self.key("unmatched_log")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(index)
            pipe.zrevrange(index, offset, offset + limit - 1)
            total, ids = await pipe.execute()
        raw = await self.redis.mget([self.key("evt", i) for i in ids]) if ids else []
        return int(total), [json.loads(r) for r in raw if r]

    # --- status API -----------------------------------------------------------------------

    async def get_request(self, api_id: str) -> tuple[dict[str, str], list[dict[str, Any]]] | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.key("req", api_id))
            pipe.lrange(self.key("reqevents", api_id), 0, -1)
            record, event_ids = await pipe.execute()
        if not record:
            return None
        record = decode_record(api_id, record)
        events: list[dict[str, Any]] = []
        if event_ids:
            raw = await self.redis.mget([self.key("evt", e) for e in event_ids])
            events = [json.loads(r) for r in raw if r]
        return record, events

    async def webhook_secret(self, configured: str | None) -> str:
        """The secret for per-request webhook targets: configured, else created once and kept."""
        if configured:
            return configured
        key = self.key("webhook_secret")
        await self.redis.set(key, new_webhook_secret(), nx=True)
        value = await self.redis.get(key)
        return str(value)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.inbox, INBOX_GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: it exists already, which is the normal case
            if "BUSYGROUP" not in str(exc):
                raise

    async def forget_consumer(self, name: str) -> bool:
        """Remove a worker's consumer from the inbox's group, unless it still holds an entry (that
        one waits to be claimed by a live worker; the consumer goes on a later sweep)."""
        return bool(await self._forget_consumer(keys=[self.inbox], args=[INBOX_GROUP, name]))

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
