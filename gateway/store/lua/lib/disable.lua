-- Disable a subscription: out of its type sets, marked disabled, announced on the ops stream.
local function disable(p, sub, reason, now)
  local skey = p .. {{SUB}} .. sub
  local types = cjson.decode(redis.call('HGET', skey, 'event_types') or '[]')
  for _, t in ipairs(types) do redis.call('SREM', p .. {{SUBS_TYPE}} .. t, sub) end
  redis.call('HSET', skey, 'status', 'disabled', 'disabled_reason', reason, 'disabled_at', now,
             'updated_at', now)
  redis.call('XADD', p .. {{OPS}}, 'MAXLEN', '~', 10000, '*', 'type', 'subscription.disabled',
             'subscription', sub, 'reason', reason, 'at', now)
end
