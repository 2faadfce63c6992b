"""Deliveries, events and subscriptions: the scripts of the fan-out path.

Every key starts with ``GATEWAY_KEY_PREFIX`` (written ``p`` below). Scripts derive their keys from
the prefix, as ``core``'s correlate does, because which keys they touch depends on what they read
(the subscription of a delivery, the event types of a subscription).

| key                         | type   | TTL                        | written by           | read by         |
|-----------------------------|--------|----------------------------|----------------------|-----------------|
| ``evt:{event_id}``          | string | retention                  | emit                 | status API, wrk |
| ``evtdlv:{event_id}``       | set    | retention                  | emit                 | replay API      |
| ``dlv:{delivery_id}``       | hash   | retention after a write    | emit, record, rearm  | worker, API     |
| ``dlvlog:{delivery_id}``    | list   | retention after a write    | record               | deliveries API  |
| ``deliveries``              | zset   | members trimmed by score   | emit                 | deliveries API  |
| ``deliveries:status:{s}``   | zset   | members trimmed by score   | emit, record, rearm  | API, bulk       |
| ``deliveries:sub:{sub_id}`` | zset   | members trimmed by score   | emit                 | API, bulk       |
| ``deliveries:type:{t}``     | zset   | members trimmed by score   | emit                 | deliveries API  |
| ``lease:{delivery_id}``     | string | attempt timeout + margin   | begin                | finish (if ours)|
| ``sub:{sub_id}``            | hash   | none (DEL on delete)       | API, settle          | worker, API     |
| ``subs``                    | zset   | none (ZREM on delete)      | API                  | list API        |
| ``subs:type:{t}``           | set    | none (SREM on delete)      | API, settle          | fan-out         |
| ``breaker:{sub_id}``        | hash   | window + cooldown + 1 h    | admit, settle        | admit, settle   |
| ``breakers:{state}``        | zset   | none (members: subs)       | admit, settle, API   | /metrics        |
| ``bucket:{sub_id}``         | hash   | refill time + 60 s         | admit                | admit           |
| ``inflight:{sub_id}``       | zset   | 2 x slot TTL               | admit, settle        | admit           |
| ``ops``                     | stream | MAXLEN ~10000              | settle (disable)     | operators       |
| ``webhook_secret``          | string | none                       | first start          | worker          |
| ``arq:job:{id}``, ``queue`` | arq's  | as arq (run + 1 day)       | record, defer, rearm | arq worker      |

Index zsets score members by the delivery's ``created_at`` (ms). Retention needs no scan: the hash
and its log carry a TTL, and every write or read of an index first drops the entries older than the
retention with one ``ZREMRANGEBYSCORE`` (O(log n + expired)).

Design notes:

* A delivery has a *cycle* (0, then +1 for each manual retry or replay) and an attempt counter
  within the cycle. The retry job of attempt n carries (cycle, n) and does nothing when the record
  has moved on, so a duplicate job (a crash between attempt and ack) can never add an attempt.
* Retry jobs are written by the same script that records the attempt, in arq's own format
  (``arq:job:{id}`` + ``ZADD queue``, skipped when the job or its result exists, as
  ``enqueue_job`` does): a pending delivery without a scheduled job cannot exist, and the API can
  re-queue a delivery without an arq connection.
* An attempt is bracketed by two scripts: ``begin`` checks that it is still due (pending, the
  expected cycle and attempt, its subscription active), takes the lease and the admission, all or
  nothing; ``finish`` settles the breaker, records, writes the next job, gives the lease back only if
  it still holds our token, and can acknowledge the inbox entry. A first attempt's ``begin`` runs
  inside the fan-out's ``emit`` script. The worker sends them through ``gateway.infra.redis_batch``.
* Admission to an attempt (``admit``) checks, in one script, the subscription's concurrency cap,
  its token bucket and its circuit breaker, and only then takes a slot, a token and (half-open) the
  probe. ``settle`` gives the slot back, feeds the breaker and the failing-since clock, and
  disables a subscription that answered 410 or has been failing for too long.
* ``breakers:open`` and ``breakers:half_open`` index the breakers in that state (member: the
  subscription, score: when its ``breaker:`` hash expires, ms on Redis's clock). Every script that
  writes a breaker's state updates them in the same step, so /metrics counts the states with two
  ZCOUNTs instead of reading every breaker. A hash that expires is a closed breaker; its entry,
  scored by that expiry, stops counting at the same moment without anyone removing it.
* Fan-out matches subscriptions through ``subs:type:{t}`` sets (plus ``subs:type:*``): one SUNION
  per event, never a scan. ``*`` does not match operator events (``subscription.*``); those go only
  to subscriptions that name them.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from arq.jobs import serialize_job
from redis.asyncio import Redis

from gateway.domain.signing import new_webhook_secret
from gateway.infra.redis_batch import read_only_call
from gateway.store.core import now_ms
from gateway.store.keys import Keys

DELIVER_JOB = "cg_deliver"
OPERATOR_EVENT_JOB = "cg_operator_event"
ARQ_JOB_TTL_MS = 86_400_000  # arq's default: a job not started within a day of its run time expires
LOG_MAX = 100  # attempts kept per delivery (the schedule has 10 by default; replays add more)

_TRIM = """
local function trim(key, cutoff) redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff) end
local function schedule(queue, job_id, payload, score)
  local jk = 'arq:job:' .. job_id
  if redis.call('EXISTS', jk, 'arq:result:' .. job_id) > 0 then return 0 end
  local ttl = math.max(0, math.floor(score - tonumber(redis.call('TIME')[1]) * 1000)) + JOB_TTL_MS
  redis.call('SET', jk, payload, 'PX', ttl)
  redis.call('ZADD', queue, score, job_id)
  return 1
end
-- A delivery waiting for its next attempt keeps its record, log and event at least until then plus
-- the retention (never shortened): a pending delivery must not outlive its event.
local function keep(p, id, event_id, ret, now, next_at)
  local ttl = math.max(0, next_at - now) + ret * 1000
  for _, k in ipairs({p .. 'dlv:' .. id, p .. 'dlvlog:' .. id, p .. 'evt:' .. (event_id or '')}) do
    local left = redis.call('PTTL', k)
    if left >= 0 and left < ttl then redis.call('PEXPIRE', k, ttl) end
  end
end
""".replace("JOB_TTL_MS", str(ARQ_JOB_TTL_MS))

# Store an event and its delivery records once. Returns {created, states}.
_EMIT_FN = """
local function emit(p, eid, event_json, ret, now, api_id, etype, first, last)
  local cutoff = now - ret * 1000
  local created = redis.call('SET', p .. 'evt:' .. eid, event_json, 'NX', 'EX', ret)
  if created then
    if api_id ~= '' then
      redis.call('RPUSH', p .. 'reqevents:' .. api_id, eid)
      redis.call('EXPIRE', p .. 'reqevents:' .. api_id, ret)
    end
    local idx = {p .. 'deliveries', p .. 'deliveries:status:pending', p .. 'deliveries:type:' .. etype}
    for i = first, last, 3 do
      local id, sub = ARGV[i], ARGV[i + 2]
      local dkey = p .. 'dlv:' .. id
      redis.call('HSET', dkey, 'id', id, 'event_id', eid, 'event_type', etype, 'target', ARGV[i + 1],
                 'sub', sub, 'status', 'pending', 'attempts', 0, 'cycle', 0, 'deferrals', 0,
                 'created_at', now, 'updated_at', now)
      redis.call('EXPIRE', dkey, ret)
      redis.call('SADD', p .. 'evtdlv:' .. eid, id)
      for _, k in ipairs(idx) do redis.call('ZADD', k, now, id) end
      if sub ~= '' then
        redis.call('ZADD', p .. 'deliveries:sub:' .. sub, now, id)
        trim(p .. 'deliveries:sub:' .. sub, cutoff)
      end
    end
    if last >= first then
      redis.call('EXPIRE', p .. 'evtdlv:' .. eid, ret)
      for _, k in ipairs(idx) do trim(k, cutoff) end
    end
  end
  -- Whoever waits on the request (GET ?wait=, SSE) finds its event stored from now on.
  if api_id ~= '' then redis.call('PUBLISH', p .. 'notify', api_id) end
  local states = {}
  for i = first, last, 3 do
    states[#states + 1] = redis.call('HGET', p .. 'dlv:' .. ARGV[i], 'status') or 'missing'
  end
  return {created and 1 or 0, states}
end
"""

# ARGV: prefix, event_id, event_json, retention_s, now_ms, api_id, event_type,
#       then (delivery_id, target_json, sub_id) per delivery.
_EMIT = (
    _TRIM
    + _EMIT_FN
    + """
return emit(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], 8, #ARGV)
"""
)

# Record one attempt and, when it is to be retried, write its retry job. Only a pending delivery
# of the expected cycle changes: a late result cannot turn a succeeded delivery into a failed one.
# Arguments (from ARGV[o] on): id, cycle ('' = any), status, attempts, code, error, now, next_at,
# log_json, job_id ('' = none), job_payload.
_RECORD_FN = """
local function record(p, ret, queue, o)
  local id, now = ARGV[o], tonumber(ARGV[o + 6])
  local dkey = p .. 'dlv:' .. id
  local cur = redis.call('HMGET', dkey, 'status', 'cycle', 'created_at', 'event_id')
  if not cur[1] then return 'missing' end
  if cur[1] ~= 'pending' or (ARGV[o + 1] ~= '' and cur[2] ~= ARGV[o + 1]) then return cur[1] end
  local status = ARGV[o + 2]
  redis.call('HSET', dkey, 'status', status, 'attempts', ARGV[o + 3], 'last_code', ARGV[o + 4],
             'last_error', ARGV[o + 5], 'last_attempt_at', now, 'updated_at', now,
             'next_attempt_at', ARGV[o + 7])
  redis.call('EXPIRE', dkey, ret)
  if ARGV[o + 8] ~= '' then
    local lkey = p .. 'dlvlog:' .. id
    redis.call('RPUSH', lkey, ARGV[o + 8])
    redis.call('LTRIM', lkey, -LOG_MAX, -1)
    redis.call('EXPIRE', lkey, ret)
  end
  if status ~= 'pending' then
    local created = tonumber(cur[3]) or now
    redis.call('ZREM', p .. 'deliveries:status:pending', id)
    redis.call('ZADD', p .. 'deliveries:status:' .. status, created, id)
    trim(p .. 'deliveries:status:' .. status, now - ret * 1000)
  end
  if ARGV[o + 9] ~= '' then schedule(queue, ARGV[o + 9], ARGV[o + 10], tonumber(ARGV[o + 7])) end
  if status == 'pending' and ARGV[o + 7] ~= '' then keep(p, id, cur[4], ret, now, tonumber(ARGV[o + 7])) end
  return status
end
""".replace("LOG_MAX", str(LOG_MAX))

# ARGV: prefix, retention_s, queue, then the record arguments.
_RECORD = _TRIM + _RECORD_FN + "return record(ARGV[1], tonumber(ARGV[2]), ARGV[3], 4)\n"

# Put the current attempt off (admission refused or lease busy): a new job for the same
# (cycle, attempt), with a fresh id. ARGV: prefix, id, cycle, attempt, run_at, queue, payload,
# retention_s, now_ms
_DEFER = (
    _TRIM
    + """
local p, id = ARGV[1], ARGV[2]
local dkey = p .. 'dlv:' .. id
local cur = redis.call('HMGET', dkey, 'status', 'cycle', 'attempts', 'event_id')
if cur[1] ~= 'pending' or cur[2] ~= ARGV[3] or tonumber(cur[3]) + 1 ~= tonumber(ARGV[4]) then
  return 0
end
local n = redis.call('HINCRBY', dkey, 'deferrals', 1)
redis.call('HSET', dkey, 'next_attempt_at', ARGV[5])
keep(p, id, cur[4], tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[5]))
return schedule(ARGV[6], id .. ':c' .. ARGV[3] .. ':a' .. ARGV[4] .. ':d' .. n, ARGV[7], tonumber(ARGV[5]))
"""
)

# Acknowledge an inbox entry and delete it (a script, so that it shares the worker's pipelines).
# KEYS: inbox. ARGV: group, entry id.
_ACK = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"""

# Start a new cycle of a delivery that is not pending (manual retry, replay): attempts from 0, its
# first job now. ARGV: prefix, id, expected_cycle, now, retention_s, queue, payload.
# Returns the new cycle, -1 if pending already, -2 if missing, -3 if the cycle moved (re-read),
# -4 if its event has expired (nothing to deliver).
_REARM = (
    _TRIM
    + """
local p, id, now, ret = ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local dkey = p .. 'dlv:' .. id
local cur = redis.call('HMGET', dkey, 'status', 'cycle', 'created_at', 'event_id')
if not cur[1] then return -2 end
if cur[1] == 'pending' then return -1 end
if cur[2] ~= ARGV[3] then return -3 end
-- The new cycle needs its event for as long as the delivery is kept: renew both, or refuse.
if redis.call('EXPIRE', p .. 'evt:' .. cur[4], ret) == 0 then return -4 end
local cycle = tonumber(cur[2]) + 1
redis.call('HSET', dkey, 'status', 'pending', 'cycle', cycle, 'attempts', 0, 'updated_at', now,
           'next_attempt_at', now)
redis.call('EXPIRE', dkey, ret)
redis.call('EXPIRE', p .. 'dlvlog:' .. id, ret)
redis.call('ZREM', p .. 'deliveries:status:' .. cur[1], id)
redis.call('ZADD', p .. 'deliveries:status:pending', tonumber(cur[3]) or now, id)
schedule(ARGV[6], id .. ':c' .. cycle .. ':a1', ARGV[7], now)
return cycle
"""
)

# ARGV: prefix, index_key, min, max, status, sub, type, offset, limit, cutoff
# The index is the most selective filter; the others are checked against each record (among the
# newest 10,000 entries of the index in the time range: total_count is capped there).
_QUERY = """
local p, idx = ARGV[1], ARGV[2]
local status, sub, etype = ARGV[5], ARGV[6], ARGV[7]
local offset, limit = tonumber(ARGV[8]), tonumber(ARGV[9])
redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. ARGV[10])
if status == '' and sub == '' and etype == '' then
  local total = redis.call('ZCOUNT', idx, ARGV[3], ARGV[4])
  return {total, redis.call('ZREVRANGEBYSCORE', idx, ARGV[4], ARGV[3], 'LIMIT', offset, limit)}
end
-- Redis runs nothing else while a script runs: look at no more than 10,000 index entries per
-- call (the newest), so a filter over a huge index cannot stall the receivers.
local total, page = 0, {}
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', idx, ARGV[4], ARGV[3], 'LIMIT', 0, 10000)) do
  local f = redis.call('HMGET', p .. 'dlv:' .. id, 'status', 'sub', 'event_type')
  if f[1] and (status == '' or f[1] == status) and (sub == '' or f[2] == sub)
     and (etype == '' or f[3] == etype) then
    if total >= offset and #page < limit then page[#page + 1] = id end
    total = total + 1
  end
end
return {total, page}
"""

_DISABLE_FN = """
local function disable(p, sub, reason, now)
  local skey = p .. 'sub:' .. sub
  local types = cjson.decode(redis.call('HGET', skey, 'event_types') or '[]')
  for _, t in ipairs(types) do redis.call('SREM', p .. 'subs:type:' .. t, sub) end
  redis.call('HSET', skey, 'status', 'disabled', 'disabled_reason', reason, 'disabled_at', now,
             'updated_at', now)
  redis.call('XADD', p .. 'ops', 'MAXLEN', '~', 10000, '*', 'type', 'subscription.disabled',
             'subscription', sub, 'reason', reason, 'at', now)
end
"""

# ARGV: prefix, id, now, event_types_json, then field/value pairs of the hash
_SUB_CREATE = """
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', p .. 'sub:' .. id, unpack(fields))
redis.call('ZADD', p .. 'subs', now, id)
for _, t in ipairs(cjson.decode(ARGV[4])) do redis.call('SADD', p .. 'subs:type:' .. t, id) end
return 1
"""

# ARGV: prefix, id, retention_s
_SUB_DELETE = """
local p, id = ARGV[1], ARGV[2]
local skey = p .. 'sub:' .. id
local types = redis.call('HGET', skey, 'event_types')
if not types then return 0 end
for _, t in ipairs(cjson.decode(types)) do redis.call('SREM', p .. 'subs:type:' .. t, id) end
redis.call('DEL', skey, p .. 'breaker:' .. id, p .. 'bucket:' .. id, p .. 'inflight:' .. id)
redis.call('ZREM', p .. 'breakers:open', id)
redis.call('ZREM', p .. 'breakers:half_open', id)
redis.call('ZREM', p .. 'subs', id)
-- Its deliveries stay listable until they expire; then nothing writes or trims its index again.
redis.call('EXPIRE', p .. 'deliveries:sub:' .. id, ARGV[3])
return 1
"""

# Re-enable a disabled subscription: active again, back in its type sets, its breaker and failing
# clock reset, in one step. ARGV: prefix, id, now. Returns 1, 0 when missing, -1 when already active.
_SUB_ENABLE = """
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local skey = p .. 'sub:' .. id
local info = redis.call('HMGET', skey, 'status', 'event_types')
if not info[1] then return 0 end
if info[1] == 'active' then return -1 end
for _, t in ipairs(cjson.decode(info[2] or '[]')) do redis.call('SADD', p .. 'subs:type:' .. t, id) end
redis.call('HSET', skey, 'status', 'active', 'updated_at', now)
redis.call('HDEL', skey, 'disabled_reason', 'disabled_at', 'failing_since')
redis.call('DEL', p .. 'breaker:' .. id)
redis.call('ZREM', p .. 'breakers:open', id)
redis.call('ZREM', p .. 'breakers:half_open', id)
return 1
"""

# ARGV: prefix, event_type, include_star ('1'/'0'). Returns id, url pairs of active subscriptions.
_SUB_MATCH = """
local p = ARGV[1]
local sets = {p .. 'subs:type:' .. ARGV[2]}
if ARGV[3] == '1' then sets[2] = p .. 'subs:type:*' end
local out = {}
for _, id in ipairs(redis.call('SUNION', unpack(sets))) do
  local f = redis.call('HMGET', p .. 'sub:' .. id, 'url', 'status')
  if f[1] and f[2] == 'active' then
    out[#out + 1] = id
    out[#out + 1] = f[1]
  end
end
return out
"""

# ARGV: prefix, id, new_secret, now, grace_ms. The current secret keeps signing until now + grace.
_SUB_ROTATE = """
local skey = ARGV[1] .. 'sub:' .. ARGV[2]
local raw = redis.call('HGET', skey, 'secrets')
if not raw then return 0 end
local now = tonumber(ARGV[4])
local keep = {{secret = ARGV[3], expires_at = 0}}
for i, s in ipairs(cjson.decode(raw)) do
  local exp = s.expires_at
  if i == 1 then exp = now + tonumber(ARGV[5]) end
  if exp == 0 or exp > now then keep[#keep + 1] = {secret = s.secret, expires_at = exp} end
end
redis.call('HSET', skey, 'secrets', cjson.encode(keep), 'updated_at', now)
return 1
"""

# Keep ``breakers:{state}`` in step with a breaker whose state went from ``old`` to ``new``; called
# after the hash (and its TTL) is written. Closed breakers are not indexed (closed = subscriptions
# minus the others). The score is the hash's expiry read back with TIME + PTTL, both Redis's clock,
# so the entry stops counting exactly when the hash is gone, whatever the workers' clocks say.
_INDEX_BREAKER_FN = """
local function index_breaker(p, sub, old, new)
  if old ~= new and old ~= 'closed' then redis.call('ZREM', p .. 'breakers:' .. old, sub) end
  if new == 'closed' then return end
  local ttl, t = redis.call('PTTL', p .. 'breaker:' .. sub), redis.call('TIME')
  local at = '+inf'
  if ttl >= 0 then at = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000) + ttl) end
  redis.call('ZADD', p .. 'breakers:' .. new, at, sub)
end
"""

# Admission: concurrency slot, rate token, breaker; nothing is taken unless all three allow.
# Returns {1, 0, 'ok'|'probe'} or {0, wait_ms, reason}.
_ADMIT_FN = (
    _INDEX_BREAKER_FN
    + """
local function admit(p, sub, now, rate, burst, cap, token, ttl, concurrency_wait)
  local ikey, qkey, bkey = p .. 'inflight:' .. sub, p .. 'bucket:' .. sub, p .. 'breaker:' .. sub
  redis.call('ZREMRANGEBYSCORE', ikey, '-inf', now)
  if redis.call('ZCARD', ikey) >= cap then return {0, concurrency_wait, 'concurrency'} end
  local t = redis.call('HMGET', qkey, 'tokens', 'ts')
  local tokens = tonumber(t[1]) or burst
  local ts = tonumber(t[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
  if tokens < 1 then return {0, math.ceil((1 - tokens) * 1000 / rate), 'rate_limited'} end
  local b = redis.call('HMGET', bkey, 'state', 'open_until', 'probe_until')
  local state, probe = b[1] or 'closed', false
  if state == 'open' and now < tonumber(b[2]) then return {0, tonumber(b[2]) - now, 'breaker_open'} end
  if state == 'half_open' and now < (tonumber(b[3]) or 0) then
    return {0, tonumber(b[3]) - now, 'breaker_probing'}
  end
  if state ~= 'closed' then
    probe = true
    redis.call('HSET', bkey, 'state', 'half_open', 'probe_until', now + ttl)
    index_breaker(p, sub, state, 'half_open')
  end
  redis.call('HSET', qkey, 'tokens', tostring(tokens - 1), 'ts', now)
  redis.call('PEXPIRE', qkey, math.ceil(burst * 1000 / rate) + 60000)
  redis.call('ZADD', ikey, now + ttl, token)
  redis.call('PEXPIRE', ikey, ttl * 2)
  return {1, 0, probe and 'probe' or 'ok'}
end
"""
)

# ARGV: prefix, sub, now, rate_per_s, burst, cap, slot_token, slot_ttl_ms, concurrency_wait_ms
_ADMIT = (
    _ADMIT_FN
    + """
return admit(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
             tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]))
"""
)

# After an attempt: free the slot, feed the breaker and the failing clock, maybe disable.
# Arguments (from ARGV[o] on): slot_token, now, ok ('1'/'0'), gone ('1'/'0'), window_ms,
# min_requests, failure_rate, cooldown_ms, disable_after_ms.
# Returns the breaker state, or 'disabled' when this attempt disabled the subscription.
_SETTLE_FN = (
    _DISABLE_FN
    + _INDEX_BREAKER_FN
    + """
local function settle(p, sub, o)
  local now = tonumber(ARGV[o + 1])
  local ok, gone = ARGV[o + 2] == '1', ARGV[o + 3] == '1'
  local window, minreq, rate, cooldown = tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5]),
    tonumber(ARGV[o + 6]), tonumber(ARGV[o + 7])
  redis.call('ZREM', p .. 'inflight:' .. sub, ARGV[o])
  local skey, bkey = p .. 'sub:' .. sub, p .. 'breaker:' .. sub
  local info = redis.call('HMGET', skey, 'status', 'failing_since')
  if not info[1] then return 'gone' end
  local b = redis.call('HMGET', bkey, 'state', 'window_start', 'ok', 'fail', 'open_until')
  local state, ws = b[1] or 'closed', tonumber(b[2]) or now
  local was = state
  local okc, failc, open_until = tonumber(b[3]) or 0, tonumber(b[4]) or 0, tonumber(b[5]) or 0
  if now - ws >= window then ws, okc, failc = now, 0, 0 end
  if ok then okc = okc + 1 else failc = failc + 1 end
  if state == 'half_open' then
    if ok then state, ws, okc, failc = 'closed', now, 0, 0 else state, open_until = 'open', now + cooldown end
  elseif state == 'closed' and not ok and okc + failc >= minreq and failc / (okc + failc) >= rate then
    state, open_until = 'open', now + cooldown
  end
  redis.call('HSET', bkey, 'state', state, 'window_start', ws, 'ok', okc, 'fail', failc,
             'open_until', open_until)
  redis.call('PEXPIRE', bkey, window + cooldown + 3600000)
  index_breaker(p, sub, was, state)
  if ok then
    redis.call('HDEL', skey, 'failing_since')
    return state
  end
  if info[1] ~= 'active' then return state end
  if gone then
    disable(p, sub, 'endpoint answered 410 Gone', now)
    return 'disabled'
  end
  if not info[2] then
    redis.call('HSET', skey, 'failing_since', now)
  elseif now - tonumber(info[2]) >= tonumber(ARGV[o + 8]) then
    disable(p, sub, 'failing since ' .. info[2], now)
    return 'disabled'
  end
  return state
end
"""
)

# ARGV: prefix, sub, then the settle arguments.
_SETTLE = _SETTLE_FN + "return settle(ARGV[1], ARGV[2], 3)\n"

# The start of an attempt, in one step: is the delivery still due (pending, the expected cycle and
# attempt), is its subscription still active, then the lease, then (for a subscription) admission.
# Nothing is taken unless everything allows; a refused admission gives the lease back.
# Arguments (from ARGV[o] on): id, cycle ('' = any), attempt ('' = any), lease_token, lease_ttl_ms,
# now, default_rate, burst, cap, concurrency_wait_ms, with_event ('1': return the event's JSON).
# Returns {'go', cycle, attempts, target, url, secrets, retry_schedule, admission, event} |
#         {'abandon', cycle, attempts, why} | {'leased', cycle, attempts} |
#         {'refused', cycle, attempts, reason, wait_ms, deferrals} | {'expired', cycle, attempts} |
#         {status, 'missing' or 'stale'}
_BEGIN_FN = """
local function begin(p, o)
  local id, token, ttl, now = ARGV[o], ARGV[o + 3], tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5])
  local d = redis.call('HMGET', p .. 'dlv:' .. id, 'status', 'cycle', 'attempts', 'target', 'sub',
                      'event_id', 'deferrals')
  if not d[1] then return {'missing'} end
  if d[1] ~= 'pending' then return {d[1]} end
  if ARGV[o + 1] ~= '' and d[2] ~= ARGV[o + 1] then return {'stale'} end
  if ARGV[o + 2] ~= '' and tonumber(d[3]) + 1 ~= tonumber(ARGV[o + 2]) then return {'stale'} end
  local event = ''
  if ARGV[o + 10] == '1' then
    event = redis.call('GET', p .. 'evt:' .. d[6])
    if not event then return {'expired', d[2], d[3]} end
  end
  local sub, s = d[5] or '', {}
  if sub ~= '' then
    s = redis.call('HMGET', p .. 'sub:' .. sub, 'status', 'url', 'secrets', 'retry_schedule', 'rate_limit')
    if not s[1] then return {'abandon', d[2], d[3], 'subscription deleted'} end
    if s[1] ~= 'active' then return {'abandon', d[2], d[3], 'subscription disabled'} end
  end
  local lkey = p .. 'lease:' .. id
  if not redis.call('SET', lkey, token, 'NX', 'PX', ttl) then return {'leased', d[2], d[3]} end
  local admission = 'ok'
  if sub ~= '' then
    local rate = tonumber(s[5]) or tonumber(ARGV[o + 6])
    local a = admit(p, sub, now, rate, tonumber(ARGV[o + 7]), tonumber(ARGV[o + 8]), token, ttl,
                    tonumber(ARGV[o + 9]))
    if a[1] == 0 then
      redis.call('DEL', lkey)
      return {'refused', d[2], d[3], a[3], a[2], tonumber(d[7]) or 0}
    end
    admission = a[3]
  end
  return {'go', d[2], d[3], d[4], s[2] or '', s[3] or '', s[4] or '', admission, event}
end
"""

# ARGV: prefix, then the begin arguments.
_BEGIN = _ADMIT_FN + _BEGIN_FN + "return begin(ARGV[1], 2)\n"

# An event, its deliveries, and the start of each one's first attempt, in one step (the fan-out's
# one round trip before sending). ARGV: prefix, event_id, event_json, retention_s, now_ms, api_id,
# event_type, n (deliveries), then n (delivery_id, target_json, sub_id), then per delivery the
# begin arguments (11 each). Returns {created, states, begun}.
_EMIT_BEGIN = (
    _TRIM
    + _EMIT_FN
    + _ADMIT_FN
    + _BEGIN_FN
    + """
local p, n = ARGV[1], tonumber(ARGV[8])
local last = 8 + n * 3
local out = emit(p, ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], 9, last)
local begun = {}
for i = 1, n do
  if out[2][i] == 'pending' then begun[i] = begin(p, last + 1 + (i - 1) * 11) else begun[i] = {out[2][i]} end
end
return {out[1], out[2], begun}
"""
)

# The end of an attempt, in one step: the subscription's slot, breaker and failing clock (when
# there is a subscription), the record and the next attempt's job, the lease given back (only if
# it is still ours), and, when this was the last delivery of an inbox entry, the entry's XACK + XDEL.
# A queue target's arq job is written here too, in arq's format, only if the record was written.
# ARGV: prefix, retention_s, queue, sub ('' = none), lease_key, lease_token, inbox, group,
#       entry_id ('' = none), target_queue, target_job_id ('' = none), target_job_payload,
#       then 11 record arguments, then 9 settle arguments, then (when the attempt failed) the
#       queue, id and payload of the job announcing the subscription's disable, if it comes to it.
# Returns {record status, breaker state ('' without a subscription)}.
_FINISH = (
    _TRIM
    + _RECORD_FN
    + _SETTLE_FN
    + """
local p, sub = ARGV[1], ARGV[4]
local state = ''
if sub ~= '' then
  state = settle(p, sub, 24)
  -- The subscription.disabled event's job, written with the disable itself (ARGV[33..35]).
  if state == 'disabled' and ARGV[34] then schedule(ARGV[33], ARGV[34], ARGV[35], tonumber(ARGV[19])) end
end
local status = record(p, tonumber(ARGV[2]), ARGV[3], 13)
if ARGV[11] ~= '' and status == 'succeeded' then
  schedule(ARGV[10], ARGV[11], ARGV[12], tonumber(ARGV[19]))  -- scored now (ARGV[19]: the record's)
end
if redis.call('GET', ARGV[5]) == ARGV[6] then redis.call('DEL', ARGV[5]) end
if ARGV[9] ~= '' then
  redis.call('XACK', ARGV[7], ARGV[8], ARGV[9])
  redis.call('XDEL', ARGV[7], ARGV[9])
end
return {status, state}
"""
)


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    wait_ms: int
    reason: str  # ok | probe | concurrency | rate_limited | breaker_open | breaker_probing


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window_ms: int
    min_requests: int
    failure_rate: float
    cooldown_ms: int
    disable_after_ms: int


@dataclass(frozen=True, slots=True)
class AttemptLimits:
    """What ``begin`` needs besides the delivery: the lease and a subscription's admission."""

    lease_ttl_ms: int
    rate: float  # tokens per second, unless the subscription sets its own ``rate_limit``
    burst: int
    cap: int
    concurrency_wait_ms: int


@dataclass(slots=True)  # not frozen: one per attempt, and frozen dataclasses are slow to build
class Begun:
    """The answer of ``begin``. ``state`` is ``go`` (the lease, and a subscription's admission, are
    held: attempt now), ``abandon`` (its subscription is gone or disabled: ``reason``), ``leased``
    (someone else is attempting it), ``refused`` (admission: ``reason``, ``wait_ms``), or why
    nothing is due: the delivery's status, ``missing`` or ``stale``."""

    state: str
    cycle: int = 0
    attempts: int = 0
    target: str = ""
    url: str = ""
    secrets: str = ""
    retry_schedule: str = ""
    reason: str = ""
    wait_ms: int = 0
    token: str = ""
    event: str = ""
    deferrals: int = 0  # how often this delivery was put off already (refused)

    @classmethod
    def parse(cls, raw: list[Any], token: str) -> Begun:
        state = str(raw[0])
        if len(raw) == 1:
            return cls(state)
        cycle, attempts = int(raw[1]), int(raw[2])
        if state == "go":
            target, url, held, schedule, admission, event = (str(v) for v in raw[3:9])
            return cls(state, cycle, attempts, target, url, held, schedule, admission, 0, token, event)
        if state == "refused":
            return cls(state, cycle, attempts, reason=str(raw[3]), wait_ms=int(raw[4]), deferrals=int(raw[5]))
        return cls(state, cycle, attempts, reason=str(raw[3]) if len(raw) > 3 else "")


@dataclass(slots=True)
class AttemptRecord:
    """What ``finish`` records about one attempt."""

    status: str  # succeeded | failed | pending (to be retried at ``retry_at``)
    attempts: int
    code: int | None
    error: str
    log_entry: dict[str, Any] | None = None
    retry_at: int | None = None


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    status: str = ""
    subscription: str = ""
    event_type: str = ""
    since_ms: int | None = None
    until_ms: int | None = None
    offset: int = 0
    limit: int = 20


_TOKENS = itertools.count()
_TOKEN_PREFIX = [secrets.token_hex(8)]


def _token() -> str:
    """A lease/slot token unique among all workers: this process's random prefix and a counter
    (``secrets.token_hex`` per attempt costs more than the rest of ``begin``'s arguments)."""
    return f"{_TOKEN_PREFIX[0]}{next(_TOKENS):x}"


def _new_token_prefix() -> None:
    _TOKEN_PREFIX[0] = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_token_prefix)  # a forked child must not repeat our tokens


def encode_event(event: dict[str, Any]) -> str:
    """An event as stored and as sent in a webhook body: compact JSON, UTF-8 kept as is."""
    return _json(event)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def _pairs(reply: Awaitable[list[Any]]) -> list[tuple[str, str]]:
    flat = await reply
    return [(str(flat[i]), str(flat[i + 1])) for i in range(0, len(flat), 2)]


def deliver_payload(dlv_id: str, cycle: int, attempt: int) -> bytes:
    """The arq job (in arq's own format) that makes attempt ``attempt`` of cycle ``cycle``."""
    return serialize_job(DELIVER_JOB, (dlv_id, cycle, attempt), {}, None, now_ms())


class DeliveryStore:
    """Events, delivery records and their attempts, subscriptions and their limits."""

    def __init__(self, redis: Redis, prefix: str, *, retention: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.retention = retention
        self.queue = self.keys.queue  # the gateway's own arq queue (workers.main.queue_name)
        self._emit = redis.register_script(_EMIT)
        self._record = redis.register_script(_RECORD)
        self._defer = redis.register_script(_DEFER)
        self._rearm = redis.register_script(_REARM)
        self._query = redis.register_script(_QUERY)
        self._sub_create = redis.register_script(_SUB_CREATE)
        self._sub_delete = redis.register_script(_SUB_DELETE)
        self._sub_match = redis.register_script(_SUB_MATCH)
        self._sub_rotate = redis.register_script(_SUB_ROTATE)
        self._sub_enable = redis.register_script(_SUB_ENABLE)
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)
        self._begin = redis.register_script(_BEGIN)
        self._emit_begin = redis.register_script(_EMIT_BEGIN)
        self._finish = redis.register_script(_FINISH)
        self._ack = redis.register_script(_ACK)

    def key(self, *parts: str) -> str:
        return self.keys.key(*parts)

    # --- events and deliveries --------------------------------------------------------------

    async def emit(
        self,
        event: dict[str, Any],
        deliveries: list[tuple[str, dict[str, Any]]],
        *,
        now: int | None = None,
    ) -> tuple[bool, list[str]]:
        """Store an event and its delivery records once. Returns (created, delivery states)."""
        args = self._emit_args(event, now)
        for dlv_id, target in deliveries:
            args += [dlv_id, _json(target), str(target.get("subscription") or "")]
        created, states = await self._emit(keys=[], args=args)
        return bool(created), [str(s) for s in states]

    def _emit_args(
        self, event: dict[str, Any], now: int | None, event_json: str | None = None
    ) -> list[str | int | float]:
        return [
            self.prefix,
            str(event["id"]),
            event_json or _json(event),
            self.retention,
            now or now_ms(),
            str(event.get("api_id") or ""),
            str(event.get("type") or ""),
        ]

    @staticmethod
    def _begin_args(
        dlv_id: str,
        cycle: int | None,
        attempt: int | None,
        token: str,
        limits: AttemptLimits,
        now: int,
        with_event: bool = False,
    ) -> list[str | int | float]:
        return [
            dlv_id,
            "" if cycle is None else cycle,
            "" if attempt is None else attempt,
            token,
            limits.lease_ttl_ms,
            now,
            limits.rate,
            limits.burst,
            limits.cap,
            limits.concurrency_wait_ms,
            "1" if with_event else "0",
        ]

    async def emit_and_begin(
        self,
        event: dict[str, Any],
        deliveries: list[tuple[str, dict[str, Any]]],
        limits: AttemptLimits,
        *,
        now: int,
        event_json: str | None = None,
    ) -> tuple[bool, list[str], list[Begun]]:
        """``emit``, then ``begin`` the first attempt of each delivery still pending and never
        attempted, in one script: the fan-out's only round trip before sending. ``event_json``:
        the event as ``encode_event`` writes it, when the caller has it already."""
        args = self._emit_args(event, now, event_json)
        args.append(len(deliveries))
        for dlv_id, target in deliveries:
            args += [dlv_id, _json(target), str(target.get("subscription") or "")]
        tokens = [_token() for _ in deliveries]
        for (dlv_id, _), token in zip(deliveries, tokens, strict=True):
            args += self._begin_args(dlv_id, 0, 1, token, limits, now)
        created, states, begun = await self._emit_begin(keys=[], args=args)
        parsed = [Begun.parse(raw, token) for raw, token in zip(begun, tokens, strict=True)]
        return bool(created), [str(s) for s in states], parsed

    async def begin(
        self,
        dlv_id: str,
        cycle: int | None,
        attempt: int | None,
        limits: AttemptLimits,
        *,
        now: int,
        with_event: bool = False,
    ) -> Begun:
        """Start attempt ``attempt`` of cycle ``cycle`` (None: whatever is next) if it is due;
        ``with_event``: also read its event (``expired`` when it is gone)."""
        token = _token()
        args = [self.prefix, *self._begin_args(dlv_id, cycle, attempt, token, limits, now, with_event)]
        return Begun.parse(await self._begin(keys=[], args=args), token)

    async def finish(
        self,
        dlv_id: str,
        begun: Begun,
        outcome: AttemptRecord,
        *,
        sub: str = "",
        breaker: BreakerPolicy | None = None,
        ok: bool = False,
        gone: bool = False,
        ack: tuple[str, str, str] | None = None,
        enqueue: tuple[str, str, bytes] | None = None,
        on_disable: tuple[str, str, bytes] | None = None,
        now: int,
    ) -> tuple[str, str]:
        """Record an attempt ``begin`` allowed: settle the subscription (``sub``), record, give the
        lease back, and with ``ack`` = (inbox, group, entry id), acknowledge that inbox entry.
        ``enqueue`` = (queue, job id, payload in arq's format): a queue target's job, written with
        the record (not if arq has that job or its result already, as ``enqueue_job`` does).
        ``on_disable`` = (queue, job id, payload): the job written if this attempt disables the
        subscription, in the same step (a crash cannot disable it silently).
        Returns (the delivery's status, the breaker state or 'disabled' or '')."""
        inbox, group, entry_id = ack or ("", "", "")
        queue, job_id, payload = enqueue or ("", "", b"")
        args: list[str | int | float | bytes] = [
            self.prefix,
            self.retention,
            self.queue,
            sub,
            self.key("lease", dlv_id),
            begun.token,
            inbox,
            group,
            entry_id,
            queue,
            job_id,
            payload,
            *self._record_args(dlv_id, begun.cycle, outcome, now),
        ]
        if sub:
            assert breaker is not None
            args += self._settle_args(begun.token, now, ok, gone, breaker)
            if on_disable is not None:
                args += list(on_disable)
        status, state = await self._finish(keys=[], args=args)
        return str(status), str(state)

    async def ack_entry(self, inbox: str, group: str, entry_id: str) -> None:
        """XACK + XDEL of an inbox entry whose work is done (when no ``finish`` did it)."""
        await self._ack(keys=[inbox], args=[group, entry_id])

    def _record_args(
        self, dlv_id: str, cycle: int | None, o: AttemptRecord, now: int
    ) -> list[str | int | bytes]:
        job_id, payload = "", b""
        if o.retry_at is not None:
            job_cycle = cycle or 0
            job_id = f"{dlv_id}:c{job_cycle}:a{o.attempts + 1}"
            payload = deliver_payload(dlv_id, job_cycle, o.attempts + 1)
        return [
            dlv_id,
            "" if cycle is None else cycle,
            o.status,
            o.attempts,
            "" if o.code is None else o.code,
            o.error[:500],
            now,
            "" if o.retry_at is None else o.retry_at,
            _json(o.log_entry) if o.log_entry else "",
            job_id,
            payload,
        ]

    @staticmethod
    def _settle_args(
        token: str, now: int, ok: bool, gone: bool, policy: BreakerPolicy
    ) -> list[str | int | float | bytes]:
        return [
            token,
            now,
            "1" if ok else "0",
            "1" if gone else "0",
            policy.window_ms,
            policy.min_requests,
            policy.failure_rate,
            policy.cooldown_ms,
            policy.disable_after_ms,
        ]

    async def record(
        self,
        dlv_id: str,
        *,
        cycle: int | None,
        status: str,
        attempts: int,
        code: int | None,
        error: str,
        log_entry: dict[str, Any] | None = None,
        retry_at: int | None = None,
        now: int | None = None,
    ) -> str:
        """Record an attempt; with ``retry_at``, also write the job of the next attempt."""
        outcome = AttemptRecord(status, attempts, code, error, log_entry, retry_at)
        args = [
            self.prefix,
            self.retention,
            self.queue,
            *self._record_args(dlv_id, cycle, outcome, now or now_ms()),
        ]
        return str(await self._record(keys=[], args=args))

    async def record_attempt(
        self,
        delivery_id: str,
        *,
        status: str,
        attempts: int,
        code: int | None,
        error: str,
        next_at: int | None,
    ) -> str:
        """Record an attempt outcome without scheduling anything (kept for older callers)."""
        return await self.record(
            delivery_id, cycle=None, status=status, attempts=attempts, code=code, error=error
        )

    async def defer(
        self, dlv_id: str, cycle: int, attempt: int, run_at: int, *, now: int | None = None
    ) -> bool:
        """Put attempt ``attempt`` off until ``run_at`` (ms, on the same clock as ``now``) without
        counting it."""
        payload = deliver_payload(dlv_id, cycle, attempt)
        args: list[str | int | bytes] = [
            self.prefix,
            dlv_id,
            cycle,
            attempt,
            run_at,
            self.queue,
            payload,
            self.retention,
            now or now_ms(),
        ]
        return bool(await self._defer(keys=[], args=args))

    async def rearm(self, dlv_id: str, *, now: int | None = None) -> int:
        """Start a new cycle of a finished delivery. New cycle, or -1 pending, -2 missing,
        -4 its event expired."""
        for _ in range(5):
            cycle = await self.redis.hget(self.key("dlv", dlv_id), "cycle")  # type: ignore[misc]
            if cycle is None:
                return -2
            payload = deliver_payload(dlv_id, int(cycle) + 1, 1)
            args: list[str | int | bytes] = [
                self.prefix,
                dlv_id,
                cycle,
                now or now_ms(),
                self.retention,
                self.queue,
                payload,
            ]
            result = int(await self._rearm(keys=[], args=args))
            if result != -3:
                return result
        return -1  # someone else keeps re-arming it: it is pending now

    async def get_delivery(self, delivery_id: str) -> dict[str, str]:
        data: dict[str, str] = await self.redis.hgetall(self.key("dlv", delivery_id))  # type: ignore[misc]
        return data

    async def get_deliveries(self, ids: list[str]) -> list[tuple[dict[str, str], list[dict[str, Any]]]]:
        """Records and attempt logs of ``ids`` (missing ones skipped), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for dlv_id in ids:
                pipe.hgetall(self.key("dlv", dlv_id))
                pipe.lrange(self.key("dlvlog", dlv_id), 0, -1)
            raw = await pipe.execute()
        out = []
        for record, log in zip(raw[::2], raw[1::2], strict=True):
            if record:
                out.append((record, [json.loads(entry) for entry in log]))
        return out

    async def query(self, q: DeliveryQuery, *, now: int | None = None) -> tuple[int, list[str]]:
        """Delivery ids matching ``q``, newest first: (total, one page)."""
        if q.subscription:
            index = self.key("deliveries", "sub", q.subscription)
        elif q.event_type:
            index = self.key("deliveries", "type", q.event_type)
        elif q.status:
            index = self.key("deliveries", "status", q.status)
        else:
            index = self.key("deliveries")
        # The index's own filter needs no check per record.
        status = "" if index.endswith(f"status:{q.status}") else q.status
        event_type = "" if q.subscription == "" else q.event_type
        cutoff = (now or now_ms()) - self.retention * 1000
        args: list[str | int] = [
            self.prefix,
            index,
            "-inf" if q.since_ms is None else q.since_ms,
            "+inf" if q.until_ms is None else q.until_ms,
            status,
            "",
            event_type,
            q.offset,
            q.limit,
            cutoff,
        ]
        total, ids = await self._query(keys=[], args=args)
        return int(total), [str(i) for i in ids]

    async def event_deliveries(self, event_id: str) -> list[str]:
        members: set[str] = await self.redis.smembers(self.key("evtdlv", event_id))  # type: ignore[misc]
        return sorted(members)

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self.key("evt", event_id))
        return json.loads(raw) if raw else None

    # --- subscriptions ----------------------------------------------------------------------

    async def create_subscription(
        self,
        *,
        url: str,
        event_types: list[str],
        description: str,
        retry_schedule: list[float] | None,
        rate_limit: float | None,
        now: int | None = None,
    ) -> dict[str, str]:
        sub_id = "sub_" + secrets.token_hex(12)
        at = now or now_ms()
        fields: dict[str, str | int] = {
            "id": sub_id,
            "url": url,
            "event_types": _json(event_types),
            "description": description,
            "secrets": _json([{"secret": new_webhook_secret(), "expires_at": 0}]),
            "retry_schedule": _json(retry_schedule) if retry_schedule is not None else "",
            "rate_limit": "" if rate_limit is None else str(rate_limit),
            "status": "active",
            "created_at": at,
            "updated_at": at,
        }
        flat: list[str | int] = [v for pair in fields.items() for v in pair]
        await self._sub_create(keys=[], args=[self.prefix, sub_id, at, _json(event_types), *flat])
        return {k: str(v) for k, v in fields.items()}

    async def get_subscription(self, sub_id: str) -> dict[str, str] | None:
        data: dict[str, str] = await self.redis.hgetall(self.key("sub", sub_id))  # type: ignore[misc]
        return data or None

    async def list_subscriptions(self, offset: int, limit: int) -> tuple[int, list[dict[str, str]]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self.key("subs"))
            pipe.zrevrange(self.key("subs"), offset, offset + limit - 1)
            total, ids = await pipe.execute()
        async with self.redis.pipeline(transaction=False) as pipe:
            for sub_id in ids:
                pipe.hgetall(self.key("sub", sub_id))
            records = await pipe.execute()
        return int(total), [r for r in records if r]

    async def delete_subscription(self, sub_id: str) -> bool:
        return bool(await self._sub_delete(keys=[], args=[self.prefix, sub_id, self.retention]))

    async def enable_subscription(self, sub_id: str, *, now: int | None = None) -> int:
        """Make a disabled subscription active again: 1, 0 when missing, -1 when already active."""
        return int(await self._sub_enable(keys=[], args=[self.prefix, sub_id, now or now_ms()]))

    async def rotate_secret(self, sub_id: str, grace_s: float, *, now: int | None = None) -> str | None:
        """Give a subscription a new primary secret; the old one signs too for ``grace_s``."""
        secret = new_webhook_secret()
        args: list[str | int] = [self.prefix, sub_id, secret, now or now_ms(), int(grace_s * 1000)]
        return secret if await self._sub_rotate(keys=[], args=args) else None

    async def matching_subscriptions(self, event_type: str) -> list[tuple[str, str]]:
        """(id, url) of the active subscriptions that want ``event_type``."""
        return await self.matching_subscriptions_soon(event_type)

    def matching_subscriptions_soon(self, event_type: str) -> Awaitable[list[tuple[str, str]]]:
        """``matching_subscriptions``, its script called now: over a batching client it joins the
        batch being filled (alongside the caller's next script) without a task of its own."""
        include_star = "0" if event_type.startswith("subscription.") else "1"
        # Read-only: the callbacks of one batch with the same event type share one reply.
        return _pairs(read_only_call(self._sub_match, [], [self.prefix, event_type, include_star]))

    # --- limits, breaker, auto-disable --------------------------------------------------------

    async def admit(
        self,
        sub_id: str,
        *,
        rate: float,
        burst: int,
        cap: int,
        slot_ttl_ms: int,
        concurrency_wait_ms: int,
        now: int | None = None,
    ) -> tuple[Admission, str]:
        """Ask to attempt a delivery to ``sub_id`` now. Returns the answer and the slot token."""
        token = secrets.token_hex(8)
        args: list[str | int | float] = [
            self.prefix,
            sub_id,
            now or now_ms(),
            rate,
            burst,
            cap,
            token,
            slot_ttl_ms,
            concurrency_wait_ms,
        ]
        allowed, wait_ms, reason = await self._admit(keys=[], args=args)
        return Admission(bool(allowed), int(wait_ms), str(reason)), token

    async def settle(
        self,
        sub_id: str,
        token: str,
        *,
        ok: bool,
        gone: bool,
        policy: BreakerPolicy,
        now: int | None = None,
    ) -> str:
        """Report an attempt's outcome. Returns the breaker state, or 'disabled'."""
        args = [self.prefix, sub_id, *self._settle_args(token, now or now_ms(), ok, gone, policy)]
        return str(await self._settle(keys=[], args=args))

    async def breaker_state(self, sub_id: str) -> str:
        state = await self.redis.hget(self.key("breaker", sub_id), "state")  # type: ignore[misc]
        return str(state or "closed")
