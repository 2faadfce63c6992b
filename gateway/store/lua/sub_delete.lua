-- Delete a subscription, its limits and breaker. Returns 1, 0 when missing.
--! args: p id retention
local skey = p .. {{SUB}} .. id
local types = redis.call('HGET', skey, 'event_types')
if not types then return 0 end
for _, t in ipairs(cjson.decode(types)) do redis.call('SREM', p .. {{SUBS_TYPE}} .. t, id) end
redis.call('DEL', skey, p .. {{BREAKER}} .. id, p .. {{BUCKET}} .. id, p .. {{INFLIGHT}} .. id)
redis.call('ZREM', p .. {{BREAKERS}} .. 'open', id)
redis.call('ZREM', p .. {{BREAKERS}} .. 'half_open', id)
redis.call('ZREM', p .. {{SUBS}}, id)
-- Its deliveries stay listable until they expire; then nothing writes or trims its index again.
redis.call('EXPIRE', p .. {{DELIVERIES_SUB}} .. id, retention)
return 1
