-- Store a callback durably unless seen before (the receiver's one round trip).
-- Returns 1 stored, 0 duplicate, -1 replayed nonce. A nonce is remembered only together with a
-- stored callback: a callback we answered 503 for (nothing stored) may come back with its nonce.
-- The first {{DUPLICATES_LOGGED}} duplicates of a callback also go to the inbox, marked 'dup', so that
-- history lists them (lua/callback_dup.lua); later ones are only counted in the dedup key.
--! keys: dedup inbox nonce
--! args: dedup_ttl entry nonce_window
if nonce ~= '' and redis.call('EXISTS', nonce) == 1 then return -1 end
if redis.call('SET', dedup, '1', 'NX', 'EX', dedup_ttl) then
  redis.call('XADD', inbox, '*', 'e', entry)
  if nonce ~= '' then redis.call('SET', nonce, '1', 'EX', nonce_window) end
  return 1
end
if redis.call('INCR', dedup) <= {{DUPLICATES_LOGGED}} + 1 then
  redis.call('XADD', inbox, '*', 'e', entry, 'dup', '1')
end
return 0
