-- Put the current attempt off (admission refused or lease busy): a new job for the same
-- (cycle, attempt), with a fresh id. Returns 1 when the job was written, 0 when nothing is due.
--! args: p id cycle attempt run_at queue payload retention now
--#include lib/schedule.lua
--#include lib/keep.lua
local dkey = p .. {{DLV}} .. id
local cur = redis.call('HMGET', dkey, 'status', 'cycle', 'attempts', 'event_id')
if cur[1] ~= 'pending' or cur[2] ~= cycle or tonumber(cur[3]) + 1 ~= tonumber(attempt) then
  return 0
end
local n = redis.call('HINCRBY', dkey, 'deferrals', 1)
redis.call('HSET', dkey, 'next_attempt_at', run_at)
keep(p, id, cur[4], tonumber(retention), tonumber(now), tonumber(run_at))
return schedule(queue, id .. ':c' .. cycle .. ':a' .. attempt .. ':d' .. n, payload, tonumber(run_at))
