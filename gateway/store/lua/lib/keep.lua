-- A delivery waiting for its next attempt keeps its record, log and event at least until then plus
-- the retention (never shortened): a pending delivery must not outlive its event.
local function keep(p, id, event_id, ret, now, next_at)
  local ttl = math.max(0, next_at - now) + ret * 1000
  for _, k in ipairs({p .. {{DLV}} .. id, p .. {{DLVLOG}} .. id, p .. {{EVT}} .. (event_id or '')}) do
    local left = redis.call('PTTL', k)
    if left >= 0 and left < ttl then redis.call('PEXPIRE', k, ttl) end
  end
end
