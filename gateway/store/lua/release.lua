-- Parked callbacks whose grace period is over go back to the inbox marked final: if they still
-- match nothing, the consumer turns them into callback.unmatched.
--! args: p now limit
now = tonumber(now)
local due = redis.call('ZRANGEBYSCORE', p .. {{UNMATCHED}}, '-inf', now, 'LIMIT', 0, limit)
for _, ckey in ipairs(due) do
  redis.call('ZREM', p .. {{UNMATCHED}}, ckey)
  local pk = p .. {{PARK}} .. ckey
  for _, entry in ipairs(redis.call('LRANGE', pk, 0, -1)) do
    redis.call('XADD', p .. {{INBOX}}, '*', 'e', entry, 'final', '1')
  end
  redis.call('DEL', pk)
end
return #due
