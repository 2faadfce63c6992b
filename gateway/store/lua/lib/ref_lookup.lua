--#include lib/unpack_id.lua
-- The api_id a ref was submitted under, or false: the live hourly generations, newest first (a
-- callback usually follows its submit within the hour, so the first or second look finds it).
local function ref_lookup(p, ref, now, ttl_s)
  local bucket = ':' .. string.sub(redis.sha1hex(ref), 1, 3)
  local newest = math.floor(now / 3600000) + 1
  local oldest = math.floor((now - ttl_s * 1000) / 3600000) - 1
  for hour = newest, oldest, -1 do
    local api_id = redis.call('HGET', p .. {{REFS}} .. string.format('%d', hour) .. bucket, ref)
    if api_id then return unpack_id(api_id) end
  end
  return false
end
