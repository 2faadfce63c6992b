"""Requests, callbacks and correlation: the scripts of the receive path (map in gateway.store).

Memory, measured with redis-server 7.0 (``hash-max-listpack-value 1024``), 20,000 of each, with
``MEMORY USAGE`` and the ``INFO memory`` delta (``python tests/bench/memory_costs.py``):

* a pending request with 100 B of metadata and one webhook target: 1,293 B in all, of which the
  ``req`` hash is 472 B, its ``link:ref`` key 120 B, and the rest its entries in the ``requests``,
  ``requests:pending`` and ``deadlines`` indexes and the expiry table;
* a stored callback: 332 B for its ``dedup`` and ``nonce`` keys (88 B each by ``MEMORY USAGE``, the
  rest the expiry table), plus its inbox entry until a worker acknowledges it.

Everything per request or per callback has a TTL (retention, dedup window, nonce window); the
indexes are trimmed by the sweep, so memory follows traffic x retention, not the age of the system.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.signing import new_webhook_secret

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

# KEYS: req, requests, deadlines, inbox, unmatched, park:api, park:ref, link:ref, requests:pending
# ARGV: retention_s, api_id, submitted_ms, deadline_ms, link_ttl_s, ref, then field/value pairs
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[1]) * 1000)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[9], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
if KEYS[8] ~= '' then redis.call('SET', KEYS[8], ARGV[2], 'EX', ARGV[5]) end
local moved = 0
for i = 6, 7 do
  if KEYS[i] ~= '' then
    for _, entry in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do
      redis.call('XADD', KEYS[4], '*', 'e', entry)
      moved = moved + 1
    end
    redis.call('DEL', KEYS[i])
  end
end
redis.call('ZREM', KEYS[5], 'api:' .. ARGV[2])
if ARGV[6] ~= '' then redis.call('ZREM', KEYS[5], 'ref:' .. ARGV[6]) end
return 1 + moved
"""

# Move a request between the per-status indexes (score: submitted_at).
_MOVE = """
local function move(p, api_id, from, to, submitted)
  redis.call('ZREM', p .. 'requests:' .. from, api_id)
  redis.call('ZADD', p .. 'requests:' .. to, submitted, api_id)
end
"""

# ARGV: prefix, ckey, cb_id, entry_json, now_ms, grace_ms, kind, seq, link_ttl_s, retention_s,
#       final ('1' when the grace period is over), then link ckeys to create on completion.
# Keys are derived inside the script from the prefix because the request key is only known
# after resolving the link (a Redis Cluster deployment keeps all keys in one slot; see docs).
_CORRELATE = (
    _MOVE
    + """
local p, ckey, cb, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, grace, kind, seq = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local link_ttl, retention, final = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local api_id
if string.sub(ckey, 1, 4) == 'api:' then
  api_id = string.sub(ckey, 5)
elseif string.sub(ckey, 1, 5) ~= 'none:' then
  api_id = redis.call('GET', p .. 'link:' .. ckey)
end
local rkey = api_id and (p .. 'req:' .. api_id) or nil
if not rkey or redis.call('EXISTS', rkey) == 0 then
  if final == '1' then
    redis.call('ZADD', p .. 'unmatched_log', now, 'evt_' .. cb)
    return {'unmatched', '', '', '', '', ''}
  end
  local pkey = p .. 'park:' .. ckey
  redis.call('RPUSH', pkey, entry)
  redis.call('PEXPIRE', pkey, grace + retention * 1000)
  redis.call('ZADD', p .. 'unmatched', 'NX', now + grace, ckey)
  return {'parked', '', '', '', '', ''}
end
local info = redis.call('HMGET', rkey, 'status', 'result_cb', 'metadata', 'targets', 'resource',
                        'submitted_at')
local outcome = 'matched'
if kind == 'result' then
  if info[2] == cb then
    outcome = 'replay'
  elseif info[1] == 'completed' then
    outcome = 'extra'
  else
    if info[1] == 'timed_out' then outcome = 'late' end
    redis.call('HSET', rkey, 'status', 'completed', 'result', entry, 'result_cb', cb,
               'completed_at', now)
    -- A finished request is kept for the retention period from now, not from its deadline.
    redis.call('EXPIRE', rkey, retention)
    move(p, api_id, info[1], 'completed', info[6])
    redis.call('ZREM', p .. 'deadlines', api_id)
    for i = 12, #ARGV do
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
return {outcome, api_id, info[1] or '', info[3] or '', info[4] or '', info[5] or ''}
"""
)

# Requests whose deadline passed: mark them timed out and put a timeout entry in the inbox, so
# the event is produced (exactly once, whatever number of workers sweep) by the inbox consumer.
# Cost: O(log n + due), never a scan of what is pending. ARGV: prefix, now_ms, limit.
_EXPIRE = (
    _MOVE
    + """
local p, now = ARGV[1], tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', p .. 'deadlines', '-inf', now, 'LIMIT', 0, ARGV[3])
for _, api_id in ipairs(due) do
  redis.call('ZREM', p .. 'deadlines', api_id)
  local rkey = p .. 'req:' .. api_id
  local info = redis.call('HMGET', rkey, 'status', 'submitted_at')
  if info[1] == 'pending' then
    redis.call('HSET', rkey, 'status', 'timed_out', 'timed_out_at', now)
    move(p, api_id, 'pending', 'timed_out', info[2])
    redis.call('XADD', p .. 'inbox', '*', 'e',
               cjson.encode({t = 'timeout', api_id = api_id, at = now}))
  end
end
return #due
"""
)

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

STATUSES = ("pending", "completed", "timed_out")


def now_ms() -> int:
    return int(time.time() * 1000)


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
    traceparent: str = ""  # W3C trace context of the submit (gateway.tracing), "" when off


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
        self.dedup_ttl = dedup_ttl
        self.retention = retention
        self.grace = grace
        self.nonce_window = nonce_window
        self.inbox = prefix + "inbox"
        self._ingest = redis.register_script(_INGEST)
        self._submit = redis.register_script(_SUBMIT)
        self._correlate = redis.register_script(_CORRELATE)
        self._expire = redis.register_script(_EXPIRE)
        self._release = redis.register_script(_RELEASE)
        self._idem_claim = redis.register_script(_IDEM_CLAIM)
        self._rate = redis.register_script(_RATE)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

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
        fields: dict[str, str | int] = {
            "api_id": req.api_id,
            "status": "pending",
            "method": req.method,
            "resource": req.resource,
            "metadata": json.dumps(req.metadata, separators=(",", ":")),
            "targets": json.dumps(req.targets, separators=(",", ":")),
            "submitted_at": submitted,
            "deadline": deadline,
            "ref": req.ref,
        }
        if req.traceparent:
            fields["traceparent"] = req.traceparent
        flat: list[str | int] = [v for pair in fields.items() for v in pair]
        keys = [
            self.key("req", req.api_id),
            self.key("requests"),
            self.key("deadlines"),
            self.inbox,
            self.key("unmatched"),
            self.key("park", "api", req.api_id),
            self.key("park", "ref", req.ref),
            self.key("link", "ref", req.ref),
            self.key("requests", "pending"),
        ]
        args = [self.retention, req.api_id, submitted, deadline, self.retention, req.ref, *flat]
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
            *(links or []),
        ]
        raw = await self._correlate(keys=[], args=args)
        outcome, api_id, status, metadata, targets, resource = (str(x) for x in raw)
        return Correlation(
            outcome=outcome,
            api_id=api_id,
            previous_status=status,
            metadata=json.loads(metadata) if metadata else {},
            targets=json.loads(targets) if targets else [],
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
            for name in ("requests", *(f"requests:{s}" for s in STATUSES), "unmatched_log"):
                pipe.zremrangebyscore(self.key(name), "-inf", cutoff)
            await pipe.execute()

    async def request_fields(self, api_id: str, *fields: str) -> list[str | None]:
        values: list[str | None] = await self.redis.hmget(self.key("req", api_id), list(fields))  # type: ignore[misc]
        return values

    async def list_requests(
        self, status: str | None, limit: int, offset: int
    ) -> tuple[int, list[dict[str, str]]]:
        """Newest first; ``status`` picks one of the per-status indexes."""
        index = self.key("requests", status) if status else self.key("requests")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(index)
            pipe.zrevrange(index, offset, offset + limit - 1)
            total, ids = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for api_id in ids:
                pipe.hgetall(self.key("req", api_id))
            records = await pipe.execute()
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
