-- Give a subscription a new primary secret; the current one keeps signing until now + grace_ms.
-- Returns 1, 0 when missing.
--! args: p id secret now grace_ms
local skey = p .. {{SUB}} .. id
local raw = redis.call('HGET', skey, 'secrets')
if not raw then return 0 end
now = tonumber(now)
local keep = {{secret = secret, expires_at = 0}}
for i, s in ipairs(cjson.decode(raw)) do
  local exp = s.expires_at
  if i == 1 then exp = now + tonumber(grace_ms) end
  if exp == 0 or exp > now then keep[#keep + 1] = {secret = s.secret, expires_at = exp} end
end
redis.call('HSET', skey, 'secrets', cjson.encode(keep), 'updated_at', now)
return 1
