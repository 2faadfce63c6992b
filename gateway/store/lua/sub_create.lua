-- Store a subscription and put it in its type sets. fields: field/value pairs of its hash.
--! args: p id now event_types ...fields
redis.call('HSET', p .. {{SUB}} .. id, unpack(fields))
redis.call('ZADD', p .. {{SUBS}}, now, id)
for _, t in ipairs(cjson.decode(event_types)) do redis.call('SADD', p .. {{SUBS_TYPE}} .. t, id) end
return 1
