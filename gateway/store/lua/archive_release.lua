-- After the archiver copied trees to PostgreSQL: for each one whose score is still the one it read
-- (nothing changed since; a change re-scores it, lib/archive.lua), remove it from the archive and,
-- if it is settled (final, no delivery pending), let Redis forget it: its request record loses its
-- result payload and is marked archived ('h'; reads go to PostgreSQL), it leaves the request and
-- delivery indexes (lists read PostgreSQL), and its events, deliveries and attempt logs expire
-- within hot_ms (never later than they would have). items: groups of
--   member score settled api_id status n_index (index member)*n_index n_key key*n_key
-- Returns how many members were removed.
--! args: p hot_ms ...items
hot_ms = tonumber(hot_ms)
local removed, i = 0, 1
while i <= #items do
  local member, score, settled, api_id, status = items[i], items[i + 1], items[i + 2], items[i + 3], items[i + 4]
  local n_index = tonumber(items[i + 5])
  local first_key = i + 6 + n_index * 2
  local n_key = tonumber(items[first_key])
  local cur = redis.call('ZSCORE', p .. {{ARCHIVE}}, member)
  if cur and tonumber(cur) == tonumber(score) then
    redis.call('ZREM', p .. {{ARCHIVE}}, member)
    removed = removed + 1
    if settled == '1' then
      if api_id ~= '' then
        local rkey = p .. {{REQ}} .. api_id
        if redis.call('EXISTS', rkey) == 1 then redis.call('HDEL', rkey, 'x'); redis.call('HSET', rkey, 'h', 1) end
        redis.call('ZREM', p .. {{REQUESTS}} .. status, api_id)
      end
      for j = i + 6, first_key - 1, 2 do redis.call('ZREM', items[j], items[j + 1]) end
      for j = first_key + 1, first_key + n_key do
        local left = redis.call('PTTL', items[j])
        if left > hot_ms then redis.call('PEXPIRE', items[j], hot_ms) end
      end
    end
  end
  i = first_key + n_key + 1
end
return removed
