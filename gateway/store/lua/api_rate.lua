-- A fixed window counter: one INCR per request, the window starts with the first request.
-- Atomic, so N processes together grant at most limit per window (tests/api/test_api_limits.py).
-- Returns 0 when allowed, else ms until the window ends.
--! keys: counter
--! args: limit window_ms
local n = redis.call('INCR', counter)
if n == 1 then redis.call('PEXPIRE', counter, window_ms) end
if n <= tonumber(limit) then return 0 end
local ttl = redis.call('PTTL', counter)
if ttl < 0 then
  redis.call('PEXPIRE', counter, window_ms)
  ttl = tonumber(window_ms)
end
return ttl
