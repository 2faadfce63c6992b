-- Idempotent submits: claim an Idempotency-Key.
-- Returns {'claimed'} for the first caller, else {state, body_hash, status, response, pttl_ms}.
--! keys: idem
--! args: body_hash lease_ms
if redis.call('HSETNX', idem, 'state', 'in_progress') == 1 then
  redis.call('HSET', idem, 'body', body_hash)
  redis.call('PEXPIRE', idem, lease_ms)
  return {'claimed'}
end
local r = redis.call('HMGET', idem, 'state', 'body', 'status', 'response')
return {r[1] or '', r[2] or '', r[3] or '', r[4] or '', redis.call('PTTL', idem)}
