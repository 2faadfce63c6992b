-- Shared sliding-window limiter: at most limit grants in any window_ms.
-- Returns 0 when granted, else ms to wait.
--! keys: limiter
--! args: now limit window member
now, limit, window = tonumber(now), tonumber(limit), tonumber(window)
redis.call('ZREMRANGEBYSCORE', limiter, '-inf', now - window)
if redis.call('ZCARD', limiter) < limit then
  redis.call('ZADD', limiter, now, member)
  redis.call('PEXPIRE', limiter, window)
  return 0
end
local oldest = redis.call('ZRANGE', limiter, 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
