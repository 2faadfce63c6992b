-- Store a request (its one-letter fields: gateway.store.records.FIELDS), index it, queue its
-- deadline, link its ref, and move anything parked under its api: or ref: ckey back into the
-- inbox: whichever of submit and callback runs first, exactly one correlation completes it.
-- park_ref and ref_bucket are '' when the request has no ref. fields: field/value pairs.
-- Returns 0 when the request exists already, else 1 + the number of callbacks moved.
--! keys: req requests due due_queue inbox unmatched park_api park_ref ref_bucket archive_key
--! args: retention api_id submitted deadline timeout ref packed_id ...fields
--#include lib/archive.lua
if redis.call('EXISTS', req) == 1 then return 0 end
redis.call('HSET', req, unpack(fields))
redis.call('PEXPIREAT', req, tonumber(deadline) + tonumber(retention) * 1000)
redis.call('ZADD', requests, submitted, api_id)
archive(archive_key, 'r:' .. api_id)
if redis.call('RPUSH', due_queue, packed_id) == 1 then redis.call('ZADD', due, deadline, timeout) end
if ref ~= '' then
  redis.call('HSET', ref_bucket, ref, packed_id)
  redis.call('EXPIRE', ref_bucket, retention)
end
local moved = 0
for _, park in ipairs({park_api, park_ref}) do
  if park ~= '' then
    for _, entry in ipairs(redis.call('LRANGE', park, 0, -1)) do
      redis.call('XADD', inbox, '*', 'e', entry)
      moved = moved + 1
    end
    redis.call('DEL', park)
  end
end
redis.call('ZREM', unmatched, 'api:' .. api_id)
if ref ~= '' then redis.call('ZREM', unmatched, 'ref:' .. ref) end
return 1 + moved
