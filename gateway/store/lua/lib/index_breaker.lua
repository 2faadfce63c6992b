-- Keep breakers:{state} in step with a breaker whose state went from old to new; called after the
-- hash (and its TTL) is written. Closed breakers are not indexed (closed = subscriptions minus the
-- others). The score is the hash's expiry read back with TIME + PTTL, both Redis's clock, so the
-- entry stops counting exactly when the hash is gone, whatever the workers' clocks say.
local function index_breaker(p, sub, old, new)
  if old ~= new and old ~= 'closed' then redis.call('ZREM', p .. {{BREAKERS}} .. old, sub) end
  if new == 'closed' then return end
  local ttl, t = redis.call('PTTL', p .. {{BREAKER}} .. sub), redis.call('TIME')
  local at = '+inf'
  if ttl >= 0 then at = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000) + ttl) end
  redis.call('ZADD', p .. {{BREAKERS}} .. new, at, sub)
end
