-- Store a callback durably unless seen before (the receiver's one round trip).
-- Returns 1 stored, 0 duplicate, -1 replayed nonce. A nonce is remembered only together with a
-- stored callback: a callback we answered 503 for (nothing stored) may come back with its nonce.
-- Dedup marks (``cb``, for dedup_ttl) and nonces (for nonce_window) are fields of time-bucketed
-- hashes (lib/seen.lua), on Redis' clock. The first {{DUPLICATES_LOGGED}} duplicates of a callback
-- also go to the inbox, marked 'dup', so that history lists them (lua/callback_dup.lua); later ones
-- are only counted in the mark.
--! keys: inbox
--! args: p cb nonce dedup_ttl entry nonce_window
--#include lib/seen.lua
dedup_ttl, nonce_window = tonumber(dedup_ttl), tonumber(nonce_window)
local now = tonumber(redis.call('TIME')[1])
local nsub = nonce ~= '' and string.sub(redis.sha1hex(nonce), 1, {{MARK_SUB_HEX}}) or ''
if nonce ~= '' and mark_seen(p .. {{NONCE}}, now, nonce_window, nsub, nonce) then return -1 end
local dsub, dfield = string.sub(cb, 1, {{MARK_SUB_HEX}}), string.sub(cb, {{MARK_SUB_HEX}} + 1)
local found = mark_seen(p .. {{DEDUP}}, now, dedup_ttl, dsub, dfield)
if not found then
  mark(p .. {{DEDUP}}, now, dedup_ttl, dsub, dfield)
  redis.call('XADD', inbox, '*', 'e', entry)
  if nonce ~= '' then mark(p .. {{NONCE}}, now, nonce_window, nsub, nonce) end
  return 1
end
if redis.call('HINCRBY', found, dfield, 1) <= {{DUPLICATES_LOGGED}} + 1 then
  redis.call('XADD', inbox, '*', 'e', entry, 'dup', '1')
end
return 0
