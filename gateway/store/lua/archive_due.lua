-- The archive's members changed at least delay_ms ago by Redis' clock (the clock their scores come
-- from: lib/archive.lua), oldest first, with their scores.
--! keys: archive_key
--! args: delay_ms limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', archive_key, '-inf', now - tonumber(delay_ms), 'WITHSCORES',
                  'LIMIT', 0, tonumber(limit))
