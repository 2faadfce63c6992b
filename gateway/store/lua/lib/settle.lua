--#include lib/disable.lua
--#include lib/index_breaker.lua
-- After an attempt: free the slot, feed the breaker and the failing clock, maybe disable.
-- ok, gone: '1' or '0'. Returns the breaker state, or 'disabled' when this attempt disabled the
-- subscription.
local function settle(p, sub, token, now, ok, gone, window, minreq, rate, cooldown, disable_after)
  now = tonumber(now)
  ok, gone = ok == '1', gone == '1'
  window, minreq, rate, cooldown = tonumber(window), tonumber(minreq), tonumber(rate), tonumber(cooldown)
  redis.call('ZREM', p .. {{INFLIGHT}} .. sub, token)
  local skey, bkey = p .. {{SUB}} .. sub, p .. {{BREAKER}} .. sub
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
  elseif now - tonumber(info[2]) >= tonumber(disable_after) then
    disable(p, sub, 'failing since ' .. info[2], now)
    return 'disabled'
  end
  return state
end
