-- Erase a finished request's payloads from Redis (DELETE /v1/requests/{api_id}): its metadata and
-- result leave its record, which keeps the bare facts and gains 'z' (erased at, ms); each event
-- keeps only its id, type, time and api_id; each attempt log entry loses the answer's excerpt.
-- PostgreSQL's copy is erased next (the caller), and the request is marked changed: a copy the
-- archiver made from what it read before is erased again by the next copy (history.store.write).
-- members: the events' keys (n_events of them), then the deliveries' attempt logs.
-- Returns 0 if there is no such request.
--! args: p api_id now n_events ...members
--#include lib/archive.lua
local rkey = p .. {{REQ}} .. api_id
if redis.call('EXISTS', rkey) == 0 then return 0 end
redis.call('HDEL', rkey, 'd', 'x')
redis.call('HSET', rkey, 'z', now)
n_events = tonumber(n_events)
for i = 1, n_events do
  local raw = redis.call('GET', members[i])
  if raw then
    local e = cjson.decode(raw)
    local bare = {id = e.id, type = e.type, created_at = e.created_at, api_id = e.api_id}
    redis.call('SET', members[i], cjson.encode(bare), 'KEEPTTL')
  end
end
for i = n_events + 1, #members do
  local entries = redis.call('LRANGE', members[i], 0, -1)
  if #entries > 0 then
    local ttl = redis.call('PTTL', members[i])
    redis.call('DEL', members[i])
    for _, raw in ipairs(entries) do
      local entry = cjson.decode(raw)
      entry.response = nil
      redis.call('RPUSH', members[i], cjson.encode(entry))
    end
    if ttl > 0 then redis.call('PEXPIRE', members[i], ttl) end
  end
end
archive(p .. {{ARCHIVE}}, 'r:' .. api_id)
return 1
