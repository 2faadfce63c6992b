--#include lib/admit.lua
-- The start of an attempt, in one step: is the delivery still due (pending, the expected cycle and
-- attempt), is its subscription still active, then the lease, then (for a subscription) admission.
-- Nothing is taken unless everything allows; a refused admission gives the lease back.
-- cycle, attempt: '' = any; default_rate: unless the subscription sets its own; with_event: '1'
-- to return the event's JSON.
-- Returns {'go', cycle, attempts, target, url, secrets, retry_schedule, admission, event} |
--         {'abandon', cycle, attempts, why} | {'leased', cycle, attempts} |
--         {'refused', cycle, attempts, reason, wait_ms, deferrals} | {'expired', cycle, attempts} |
--         {status, 'missing' or 'stale'}
local function begin(p, id, cycle, attempt, token, ttl, now, default_rate, burst, cap, concurrency_wait,
                     with_event)
  ttl, now = tonumber(ttl), tonumber(now)
  local d = redis.call('HMGET', p .. {{DLV}} .. id, 'status', 'cycle', 'attempts', 'target', 'sub',
                      'event_id', 'deferrals')
  if not d[1] then return {'missing'} end
  if d[1] ~= 'pending' then return {d[1]} end
  if cycle ~= '' and d[2] ~= cycle then return {'stale'} end
  if attempt ~= '' and tonumber(d[3]) + 1 ~= tonumber(attempt) then return {'stale'} end
  local event = ''
  if with_event == '1' then
    event = redis.call('GET', p .. {{EVT}} .. d[6])
    if not event then return {'expired', d[2], d[3]} end
  end
  local sub, s = d[5] or '', {}
  if sub ~= '' then
    s = redis.call('HMGET', p .. {{SUB}} .. sub, 'status', 'url', 'secrets', 'retry_schedule', 'rate_limit')
    if not s[1] then return {'abandon', d[2], d[3], 'subscription deleted'} end
    if s[1] ~= 'active' then return {'abandon', d[2], d[3], 'subscription disabled'} end
  end
  local lkey = p .. {{LEASE}} .. id
  if not redis.call('SET', lkey, token, 'NX', 'PX', ttl) then return {'leased', d[2], d[3]} end
  local admission = 'ok'
  if sub ~= '' then
    local rate = tonumber(s[5]) or tonumber(default_rate)
    local a = admit(p, sub, now, rate, tonumber(burst), tonumber(cap), token, ttl, tonumber(concurrency_wait))
    if a[1] == 0 then
      redis.call('DEL', lkey)
      return {'refused', d[2], d[3], a[3], a[2], tonumber(d[7]) or 0}
    end
    admission = a[3]
  end
  return {'go', d[2], d[3], d[4], s[2] or '', s[3] or '', s[4] or '', admission, event}
end
