-- Undo a stored callback's dedup mark and nonce (the receiver, when the replicas did not confirm
-- the write in time and it answers 503): Plivo's retry, same nonce, is then stored again. Both
-- periods a mark may sit in are cleared (lib/seen.lua).
--! args: p cb nonce dedup_ttl nonce_window
--#include lib/seen.lua
dedup_ttl, nonce_window = tonumber(dedup_ttl), tonumber(nonce_window)
local now = tonumber(redis.call('TIME')[1])
local dsub, dfield = string.sub(cb, 1, {{MARK_SUB_HEX}}), string.sub(cb, {{MARK_SUB_HEX}} + 1)
local nsub = nonce ~= '' and string.sub(redis.sha1hex(nonce), 1, {{MARK_SUB_HEX}}) or ''
for back = 0, 1 do
  redis.call('HDEL', bucket_key(p .. {{DEDUP}}, now, dedup_ttl, dsub, back), dfield)
  if nonce ~= '' then redis.call('HDEL', bucket_key(p .. {{NONCE}}, now, nonce_window, nsub, back), nonce) end
end
return 1
