-- Resolve a callback's ckey to a request and complete or link it, or park the callback, in one
-- step (lib/resolve.lua), and log it with what it belongs to (lib/callback_log.lua). A result is
-- parked under its ref when it has one, where both kinds of request look on submit. Keys are
-- derived here from the prefix because the request key is only known after resolving the link
-- (gateway.store.keys).
-- final: '1' when the grace period is over; ref: the callback URL's, or ''; at, sv: when it was
-- received and the signature version that verified it ('' if none); links: ckeys to link to the
-- request on completion.
-- Returns {outcome, api_id, previous status, metadata, targets, resource}.
--! args: p ckey cb entry now grace kind seq link_ttl retention final ref at sv ...links
--#include lib/move.lua
--#include lib/resolve.lua
--#include lib/callback_log.lua
now, grace, link_ttl, retention = tonumber(now), tonumber(grace), tonumber(link_ttl), tonumber(retention)
local api_id, rkey = resolve(p, ckey, ref, now, link_ttl)
if not rkey then
  if final == '1' then
    local eid = 'evt_' .. cb
    redis.call('ZADD', p .. {{UNMATCHED_LOG}}, now, eid)
    log_callback(p, eid, cb, at, now, sv, 'unmatched', kind, retention)
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
      local lkey = p .. {{LINK}} .. lk
      redis.call('HSET', lkey, 'a', api_id)
      redis.call('EXPIRE', lkey, link_ttl)
      local pk = p .. {{PARK}} .. lk
      for _, parked in ipairs(redis.call('LRANGE', pk, 0, -1)) do
        redis.call('XADD', p .. {{INBOX}}, '*', 'e', parked)
      end
      redis.call('DEL', pk)
      redis.call('ZREM', p .. {{UNMATCHED}}, lk)
    end
  end
elseif seq ~= '' then
  -- The last accepted status of the ckey is kept in its link (lib/resolve.lua): one key a message.
  local lkey = p .. {{LINK}} .. ckey
  local last = redis.call('HMGET', lkey, 'q', 'c')
  if last[1] and tonumber(last[1]) > tonumber(seq) then
    outcome = 'stale'
  elseif last[1] and tonumber(last[1]) == tonumber(seq) and last[2] ~= cb then
    outcome = 'stale'
  else
    redis.call('HSET', lkey, 'q', seq, 'c', cb)
    redis.call('EXPIRE', lkey, link_ttl)
  end
end
log_callback(p, api_id, cb, at, now, sv, outcome, kind, link_ttl)
return {outcome, api_id, status, info[3] or '', info[4] or '', info[5] or ''}
