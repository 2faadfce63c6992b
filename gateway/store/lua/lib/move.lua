-- Move a request between the per-status indexes (score: submitted_at).
local function move(p, api_id, from, to, submitted)
  redis.call('ZREM', p .. {{REQUESTS}} .. from, api_id)
  redis.call('ZADD', p .. {{REQUESTS}} .. to, submitted, api_id)
end
