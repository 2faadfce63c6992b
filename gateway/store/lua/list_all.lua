-- Every status, newest first, from the per-status indexes (no all-statuses index is kept).
-- Returns {total, api_id...}. Ranks across sets without reading what precedes the page: a binary
-- search finds the score s with at most offset members above it, then each set gives its members
-- from s down. Ties are ordered as one sorted set would order them (member, descending).
--! keys: ...indexes
--! args: offset limit
offset, limit = tonumber(offset), tonumber(limit)
local total, lo, hi = 0, nil, nil
for _, k in ipairs(indexes) do
  local n = redis.call('ZCARD', k)
  if n > 0 then
    total = total + n
    local low = tonumber(redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')[2])
    local high = tonumber(redis.call('ZRANGE', k, -1, -1, 'WITHSCORES')[2])
    lo = math.min(lo or low, low)
    hi = math.max(hi or high, high)
  end
end
if offset >= total then return {total} end
local function above(s)
  local n = 0
  for _, k in ipairs(indexes) do n = n + redis.call('ZCOUNT', k, '(' .. string.format('%.17g', s), '+inf') end
  return n
end
-- above(lo) > offset >= above(hi); scores are integers (ms), so the search ends at hi = lo + 1.
lo = math.floor(lo) - 1
while hi - lo > 1 do
  local mid = math.floor((lo + hi) / 2)
  if above(mid) > offset then lo = mid else hi = mid end
end
local skip = offset - above(hi)
local rows = {}
for _, k in ipairs(indexes) do
  local got = redis.call('ZREVRANGEBYSCORE', k, string.format('%.17g', hi), '-inf', 'WITHSCORES',
                         'LIMIT', 0, skip + limit)
  for i = 1, #got, 2 do rows[#rows + 1] = {got[i], tonumber(got[i + 1])} end
end
table.sort(rows, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] > b[1]
end)
local out = {total}
for i = skip + 1, math.min(#rows, skip + limit) do out[#out + 1] = rows[i][1] end
return out
