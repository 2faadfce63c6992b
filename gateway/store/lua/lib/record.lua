--#include lib/trim.lua
--#include lib/schedule.lua
--#include lib/keep.lua
--#include lib/archive.lua
-- Record one attempt and, when it is to be retried, write its retry job. Only a pending delivery
-- of the expected cycle changes: a late result cannot turn a succeeded delivery into a failed one.
-- cycle: '' = any; next_at: the retry's time or ''; log: the attempt's log entry or ''; job_id:
-- the retry job's id or '' (none).
local function record(p, ret, queue, id, cycle, status, attempts, code, err, now, next_at, log, job_id,
                      payload)
  now = tonumber(now)
  local dkey = p .. {{DLV}} .. id
  local cur = redis.call('HMGET', dkey, 'status', 'cycle', 'created_at', 'event_id', 'api_id')
  if not cur[1] then return 'missing' end
  if cur[1] ~= 'pending' or (cycle ~= '' and cur[2] ~= cycle) then return cur[1] end
  redis.call('HSET', dkey, 'status', status, 'attempts', attempts, 'last_code', code,
             'last_error', err, 'last_attempt_at', now, 'updated_at', now,
             'next_attempt_at', next_at)
  redis.call('EXPIRE', dkey, ret)
  if log ~= '' then
    local lkey = p .. {{DLVLOG}} .. id
    redis.call('RPUSH', lkey, log)
    redis.call('LTRIM', lkey, -{{LOG_MAX}}, -1)
    redis.call('EXPIRE', lkey, ret)
  end
  if status ~= 'pending' then
    local created = tonumber(cur[3]) or now
    redis.call('ZREM', p .. {{DELIVERIES_STATUS}} .. 'pending', id)
    redis.call('ZADD', p .. {{DELIVERIES_STATUS}} .. status, created, id)
    trim(p .. {{DELIVERIES_STATUS}} .. status, now - ret * 1000)
  end
  if status ~= 'pending' then archive(p .. {{ARCHIVE}}, cur[5] and ('r:' .. cur[5]) or ('e:' .. cur[4])) end
  if job_id ~= '' then schedule(queue, job_id, payload, tonumber(next_at)) end
  if status == 'pending' and next_at ~= '' then keep(p, id, cur[4], ret, now, tonumber(next_at)) end
  return status
end
