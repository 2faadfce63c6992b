-- Mark a request ('r:' .. api_id) or an event of no request ('e:' .. event_id) as changed, for the
-- archiver that copies it to PostgreSQL (workers/archive.py). The score is Redis' own clock in ms,
-- and always above the member's previous score: the archiver removes a member only if its score is
-- still the one it read, so a change made while it copies is never lost.
local function archive(key, member)
  local t = redis.call('TIME')
  local at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local cur = redis.call('ZSCORE', key, member)
  if cur and tonumber(cur) >= at then at = tonumber(cur) + 1 end
  redis.call('ZADD', key, at, member)
end
