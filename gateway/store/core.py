"""Requests, callbacks and correlation: the scripts of the receive path (map in gateway.store)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway.signing import new_webhook_secret

INBOX_GROUP = "correlate"
PARK_MARGIN_S = 86400

_INGEST = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
  return 1
end
return 0
"""

# KEYS: req, requests, deadlines, inbox, unmatched, park:api, park:ref, link:ref
# ARGV: retention_s, api_id, submitted_ms, deadline_ms, link_ttl_s, ref, then field/value pairs
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[1]) * 1000)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
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

# ARGV: prefix, ckey, cb_id, entry_json, now_ms, grace_ms, kind, seq, link_ttl_s, retention_s,
#       then link ckeys to create when this callback completes a request.
# Keys are derived inside the script from the prefix because the request key is only known
# after resolving the link (a Redis Cluster deployment keeps all keys in one slot; see docs).
_CORRELATE = """
local p, ckey, cb, entry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, grace, kind, seq = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local link_ttl, retention = tonumber(ARGV[9]), tonumber(ARGV[10])
local api_id
if string.sub(ckey, 1, 4) == 'api:' then
  api_id = string.sub(ckey, 5)
elseif string.sub(ckey, 1, 5) ~= 'none:' then
  api_id = redis.call('GET', p .. 'link:' .. ckey)
end
local rkey = api_id and (p .. 'req:' .. api_id) or nil
if not rkey or redis.call('EXISTS', rkey) == 0 then
  local pkey = p .. 'park:' .. ckey
  redis.call('RPUSH', pkey, entry)
  redis.call('PEXPIRE', pkey, grace + retention * 1000)
  redis.call('ZADD', p .. 'unmatched', 'NX', now + grace, ckey)
  return {'parked', '', '', '', '', ''}
end
local info = redis.call('HMGET', rkey, 'status', 'result_cb', 'metadata', 'targets', 'resource')
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
    redis.call('ZREM', p .. 'deadlines', api_id)
    for i = 11, #ARGV do
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
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.dedup_ttl = dedup_ttl
        self.retention = retention
        self.grace = grace
        self.inbox = prefix + "inbox"
        self._ingest = redis.register_script(_INGEST)
        self._submit = redis.register_script(_SUBMIT)
        self._correlate = redis.register_script(_CORRELATE)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- receiver -------------------------------------------------------------------------

    async def ingest(self, cb_id: str, entry_json: str) -> bool:
        """Store a callback durably unless it was seen before. True if it is new."""
        keys = [self.key("dedup", cb_id), self.inbox]
        return bool(await self._ingest(keys=keys, args=[self.dedup_ttl, entry_json]))

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
        ]
        args = [self.retention, req.api_id, submitted, deadline, self.retention, req.ref, *flat]
        return bool(await self._submit(keys=keys, args=args))

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
