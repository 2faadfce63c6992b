-- Delivery ids matching the filters, newest first: {total, page}. The index is the most selective
-- filter; the others are checked against each record (among the newest 10,000 entries of the index
-- in the time range: total_count is capped there). cutoff: entries older are trimmed first.
--! args: p idx min max status sub etype offset limit cutoff
offset, limit = tonumber(offset), tonumber(limit)
redis.call('ZREMRANGEBYSCORE', idx, '-inf', '(' .. cutoff)
if status == '' and sub == '' and etype == '' then
  local total = redis.call('ZCOUNT', idx, min, max)
  return {total, redis.call('ZREVRANGEBYSCORE', idx, max, min, 'LIMIT', offset, limit)}
end
-- Redis runs nothing else while a script runs: look at no more than 10,000 index entries per
-- call (the newest), so a filter over a huge index cannot stall the receivers.
local total, page = 0, {}
for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', idx, max, min, 'LIMIT', 0, 10000)) do
  local f = redis.call('HMGET', p .. {{DLV}} .. id, 'status', 'sub', 'event_type')
  if f[1] and (status == '' or f[1] == status) and (sub == '' or f[2] == sub)
     and (etype == '' or f[3] == etype) then
    if total >= offset and #page < limit then page[#page + 1] = id end
    total = total + 1
  end
end
return {total, page}
