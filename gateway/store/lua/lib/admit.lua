--#include lib/index_breaker.lua
-- Admission: concurrency slot, rate token, breaker; nothing is taken unless all three allow.
-- Returns {1, 0, 'ok'|'probe'} or {0, wait_ms, reason}.
local function admit(p, sub, now, rate, burst, cap, token, ttl, concurrency_wait)
  local ikey, qkey, bkey = p .. {{INFLIGHT}} .. sub, p .. {{BUCKET}} .. sub, p .. {{BREAKER}} .. sub
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
