-- Put a delivery that Redis has let go back from PostgreSQL's copy (its record, its attempt log and
-- its event), so that it can be retried or replayed as if it had never left (gateway.store.archive).
-- Nothing that exists is overwritten: a delivery or event still in Redis is kept as it is.
-- fields: the delivery record's field/value pairs; log: its attempt log as a JSON array.
-- Returns 1 if the delivery was put back, 0 if Redis had it.
--! args: p ret id event_id event_json log ...fields
ret = tonumber(ret)
local ekey = p .. {{EVT}} .. event_id
if redis.call('EXISTS', ekey) == 0 then redis.call('SET', ekey, event_json, 'EX', ret) end
redis.call('SADD', p .. {{EVTDLV}} .. event_id, id)
redis.call('EXPIRE', p .. {{EVTDLV}} .. event_id, ret)
local dkey = p .. {{DLV}} .. id
if redis.call('EXISTS', dkey) == 1 then return 0 end
redis.call('HSET', dkey, unpack(fields))
redis.call('EXPIRE', dkey, ret)
local lkey = p .. {{DLVLOG}} .. id
redis.call('DEL', lkey)
for _, entry in ipairs(cjson.decode(log)) do redis.call('RPUSH', lkey, cjson.encode(entry)) end
redis.call('LTRIM', lkey, -{{LOG_MAX}}, -1)
redis.call('EXPIRE', lkey, ret)
local info = redis.call('HMGET', dkey, 'created_at', 'status', 'event_type', 'sub')
local created = tonumber(info[1]) or 0
redis.call('ZADD', p .. {{DELIVERIES}}, created, id)
redis.call('ZADD', p .. {{DELIVERIES_STATUS}} .. (info[2] or 'failed'), created, id)
redis.call('ZADD', p .. {{DELIVERIES_TYPE}} .. (info[3] or ''), created, id)
if info[4] and info[4] ~= '' then redis.call('ZADD', p .. {{DELIVERIES_SUB}} .. info[4], created, id) end
return 1
