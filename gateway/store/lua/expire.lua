-- Requests whose deadline passed: mark them timed out and put a timeout entry in the inbox, so
-- the event is produced (exactly once, whatever number of workers sweep) by the inbox consumer.
-- Only the queues whose head is due are touched, and in each only the due entries and the first
-- one that is not: O(log n + due), never a scan of what is pending.
-- Returns how many entries were popped (finished requests' entries are popped and skipped).
--! args: p now limit
--#include lib/move.lua
--#include lib/unpack_id.lua
now, limit = tonumber(now), tonumber(limit)
local popped = 0
for _, timeout in ipairs(redis.call('ZRANGEBYSCORE', p .. {{DUE}}, '-inf', now, 'LIMIT', 0, limit)) do
  local queue, span, head = p .. {{DUE_QUEUE}} .. timeout, tonumber(timeout) * 1000, nil
  while popped < limit do
    local api_id = redis.call('LINDEX', queue, 0)
    if not api_id then break end
    api_id = unpack_id(api_id)
    local rkey = p .. {{REQ}} .. api_id
    local info = redis.call('HMGET', rkey, 's', 'a')
    if info[2] and tonumber(info[2]) + span > now then
      head = tonumber(info[2]) + span
      break
    end
    redis.call('LPOP', queue)
    popped = popped + 1
    if info[2] and (not info[1] or info[1] == 'unknown') then
      redis.call('HSET', rkey, 's', 'timed_out', 'o', now)
      move(p, api_id, info[1] or 'pending', 'timed_out', info[2])
      redis.call('XADD', p .. {{INBOX}}, '*', 'e',
                 cjson.encode({t = 'timeout', api_id = api_id, at = now}))
    end
  end
  if head then
    redis.call('ZADD', p .. {{DUE}}, head, timeout)
  elseif redis.call('EXISTS', queue) == 0 then
    redis.call('ZREM', p .. {{DUE}}, timeout)
  end
end
return popped
