-- Drop the index entries created before cutoff (ms).
local function trim(key, cutoff) redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff) end
