-- The active subscriptions that want event_type (and those of '*' when include_star is '1'):
-- id, url pairs. Read-only.
--! args: p event_type include_star
local sets = {p .. {{SUBS_TYPE}} .. event_type}
if include_star == '1' then sets[2] = p .. {{SUBS_TYPE}} .. '*' end
local out = {}
for _, id in ipairs(redis.call('SUNION', unpack(sets))) do
  local f = redis.call('HMGET', p .. {{SUB}} .. id, 'url', 'status')
  if f[1] and f[2] == 'active' then
    out[#out + 1] = id
    out[#out + 1] = f[1]
  end
end
return out
