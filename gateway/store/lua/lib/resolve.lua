-- The request a callback's ckey names (gateway.domain.callbacks): its api_id and its record's key, or
-- nil when none is in Redis. A result carrying both an api_id and a ref falls back to the ref when
-- no request has that api_id (one whose upstream reply was lost is kept under its ref).
-- A link (link:{ckey}) is a hash: 'a' the api_id, 'q' and 'c' the sequence number and callback id
-- of the last status accepted for the ckey (correlate.lua). A link written as a string, with its
-- status in state:{ckey}, by a gateway before links were hashes is made a hash on its first read,
-- keeping its TTL.
--#include lib/ref_lookup.lua
local function linked(p, ckey)
  local key = p .. {{LINK}} .. ckey
  local ok, api_id = pcall(redis.call, 'HGET', key, 'a')
  if ok then return api_id end
  api_id = redis.call('GET', key)
  local ttl = redis.call('PTTL', key)
  local skey = p .. {{STATE}} .. ckey
  local st = redis.call('HMGET', skey, 'seq', 'cb')
  redis.call('DEL', key, skey)
  redis.call('HSET', key, 'a', api_id)
  if st[1] then redis.call('HSET', key, 'q', st[1], 'c', st[2] or '') end
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  return api_id
end

local function resolve(p, ckey, ref, now, link_ttl)
  local api_id
  if string.sub(ckey, 1, 4) == 'api:' then
    api_id = string.sub(ckey, 5)
  elseif string.sub(ckey, 1, 4) == 'ref:' then
    api_id = ref_lookup(p, string.sub(ckey, 5), now, link_ttl)
  elseif string.sub(ckey, 1, 5) ~= 'none:' then
    api_id = linked(p, ckey)
  end
  local rkey = api_id and (p .. {{REQ}} .. api_id) or nil
  if ref ~= '' and (not rkey or redis.call('EXISTS', rkey) == 0) then
    api_id = ref_lookup(p, ref, now, link_ttl)
    rkey = api_id and (p .. {{REQ}} .. api_id) or nil
  end
  if not rkey or redis.call('EXISTS', rkey) == 0 then return nil, nil end
  return api_id, rkey
end
