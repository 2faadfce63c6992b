-- Resolve a callback's ckey to a request and complete or link it, or park the callback, in one
-- step. A result carrying both an api_id and a ref falls back to the ref when no request has that
-- api_id (one whose upstream reply was lost is kept under its ref) and is parked under the ref,
-- where both kinds of request look on submit. Keys are derived here from the prefix because the
-- request key is only known after resolving the link (gateway.store.keys).
-- final: '1' when the grace period is over; ref: the callback URL's, or ''; links: ckeys to link
-- to the request on completion.
-- Returns {outcome, api_id, previous status, metadata, targets, resource}.
--! args: p ckey cb entry now grace kind seq link_ttl retention final ref ...links
--#include lib/move.lua
--#include lib/ref_lookup.lua
now, grace, link_ttl, retention = tonumber(now), tonumber(grace), tonumber(link_ttl), tonumber(retention)
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
if not rkey or redis.call('EXISTS', rkey) == 0 then
  if final == '1' then
    redis.call('ZADD', p .. {{UNMATCHED_LOG}}, now, 'evt_' .. cb)
    return {'unmatched', '', '', '', '', ''}
  end
  local park = ref ~= '' and ('ref:' .. ref) or ckey
  local pkey = p .. {{PARK}} .. park
  redis.call('RPUSH', pkey, entry)
  redis.call('PEXPIRE', pkey, grace + retention * 1000)
  redis.call('ZADD', p .. {{UNMATCHED}}, 'NX', now + grace, park)
  return {'parked', '', '', '', '', ''}
end
local info = redis.call('HMGET', rkey, 's', 'b', 'd', 't', 'r', 'a')
local status = info[1] or 'pending'
local outcome = 'matched'
if kind == 'result' then
  if info[2] == cb then
    outcome = 'replay'
  elseif status == 'completed' then
    outcome = 'extra'
  else
    if status == 'timed_out' then outcome = 'late' end
    redis.call('HSET', rkey, 's', 'completed', 'x', entry, 'b', cb, 'c', now)
    -- A finished request is kept for link_ttl (GATEWAY_LINK_TTL) from now, not from its deadline,
    -- so that late status callbacks find it (its history is in PostgreSQL for the retention).
    -- Its entry in due:{timeout} stays; the sweep skips it when its deadline comes.
    redis.call('EXPIRE', rkey, link_ttl)
    move(p, api_id, status, 'completed', info[6])
    for _, lk in ipairs(links) do
      redis.call('SET', p .. {{LINK}} .. lk, api_id, 'EX', link_ttl)
      local pk = p .. {{PARK}} .. lk
      for _, parked in ipairs(redis.call('LRANGE', pk, 0, -1)) do
        redis.call('XADD', p .. {{INBOX}}, '*', 'e', parked)
      end
      redis.call('DEL', pk)
      redis.call('ZREM', p .. {{UNMATCHED}}, lk)
    end
  end
elseif seq ~= '' then
  local skey = p .. {{STATE}} .. ckey
  local last = redis.call('HGET', skey, 'seq')
  if last and tonumber(last) > tonumber(seq) then
    outcome = 'stale'
  elseif last and tonumber(last) == tonumber(seq) and redis.call('HGET', skey, 'cb') ~= cb then
    outcome = 'stale'
  else
    redis.call('HSET', skey, 'seq', seq, 'cb', cb)
    redis.call('EXPIRE', skey, link_ttl)
  end
end
return {outcome, api_id, status, info[3] or '', info[4] or '', info[5] or ''}
