-- Start a new cycle of a delivery that is not pending (manual retry, replay): attempts from 0, its
-- first job now. Returns the new cycle, -1 if pending already, -2 if missing, -3 if the cycle moved
-- (re-read), -4 if its event has expired (nothing to deliver).
--! args: p id expected_cycle now retention queue payload
--#include lib/schedule.lua
--#include lib/archive.lua
now, retention = tonumber(now), tonumber(retention)
local dkey = p .. {{DLV}} .. id
local cur = redis.call('HMGET', dkey, 'status', 'cycle', 'created_at', 'event_id', 'api_id')
if not cur[1] then return -2 end
if cur[1] == 'pending' then return -1 end
if cur[2] ~= expected_cycle then return -3 end
-- The new cycle needs its event for as long as the delivery is kept: renew both, or refuse.
if redis.call('EXPIRE', p .. {{EVT}} .. cur[4], retention) == 0 then return -4 end
local cycle = tonumber(cur[2]) + 1
redis.call('HSET', dkey, 'status', 'pending', 'cycle', cycle, 'attempts', 0, 'updated_at', now,
           'next_attempt_at', now)
redis.call('EXPIRE', dkey, retention)
redis.call('EXPIRE', p .. {{DLVLOG}} .. id, retention)
redis.call('ZREM', p .. {{DELIVERIES_STATUS}} .. cur[1], id)
redis.call('ZADD', p .. {{DELIVERIES_STATUS}} .. 'pending', tonumber(cur[3]) or now, id)
schedule(queue, id .. ':c' .. cycle .. ':a1', payload, now)
archive(p .. {{ARCHIVE}}, cur[5] and ('r:' .. cur[5]) or ('e:' .. cur[4]))
return cycle
