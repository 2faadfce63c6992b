-- The request a callback's ckey names (gateway.domain.callbacks): its api_id and its record's key, or
-- nil when none is in Redis. A result carrying both an api_id and a ref falls back to the ref when
-- no request has that api_id (one whose upstream reply was lost is kept under its ref).
--#include lib/ref_lookup.lua
local function resolve(p, ckey, ref, now, link_ttl)
  local api_id
  if string.sub(ckey, 1, 4) == 'api:' then
    api_id = string.sub(ckey, 5)
  elseif string.sub(ckey, 1, 4) == 'ref:' then
    api_id = ref_lookup(p, string.sub(ckey, 5), now, link_ttl)
  elseif string.sub(ckey, 1, 5) ~= 'none:' then
    api_id = redis.call('GET', p .. {{LINK}} .. ckey)
  end
  local rkey = api_id and (p .. {{REQ}} .. api_id) or nil
  if ref ~= '' and (not rkey or redis.call('EXISTS', rkey) == 0) then
    api_id = ref_lookup(p, ref, now, link_ttl)
    rkey = api_id and (p .. {{REQ}} .. api_id) or nil
  end
  if not rkey or redis.call('EXISTS', rkey) == 0 then return nil, nil end
  return api_id, rkey
end
