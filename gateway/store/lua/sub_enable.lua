-- Re-enable a disabled subscription: active again, back in its type sets, its breaker and failing
-- clock reset, in one step. Returns 1, 0 when missing, -1 when already active.
--! args: p id now
local skey = p .. {{SUB}} .. id
local info = redis.call('HMGET', skey, 'status', 'event_types')
if not info[1] then return 0 end
if info[1] == 'active' then return -1 end
for _, t in ipairs(cjson.decode(info[2] or '[]')) do redis.call('SADD', p .. {{SUBS_TYPE}} .. t, id) end
redis.call('HSET', skey, 'status', 'active', 'updated_at', now)
redis.call('HDEL', skey, 'disabled_reason', 'disabled_at', 'failing_since')
redis.call('DEL', p .. {{BREAKER}} .. id)
redis.call('ZREM', p .. {{BREAKERS}} .. 'open', id)
redis.call('ZREM', p .. {{BREAKERS}} .. 'half_open', id)
return 1
