-- Dedup and nonce marks as fields of time-bucketed hashes rather than a key each (a key costs about
-- 350 B of Redis; a field of a small hash, kept as a listpack, about 40): ``{base}{b}:{sub}`` where
-- b = floor(now / span) and ``sub`` spreads a period over many small hashes (each stays a listpack
-- while it holds at most hash-max-listpack-entries fields). A mark is looked up in its period and
-- the one before, so it is remembered for at least ``span`` seconds (at most twice that), and a
-- bucket expires once the period after its own has ended.
-- mark_seen returns the key of the bucket holding ``field``, or nil; mark writes it.
local function bucket_key(base, now_s, span, sub, back)
  return base .. string.format('%d', math.floor(now_s / span) - back) .. ':' .. sub
end

local function mark_seen(base, now_s, span, sub, field)
  for back = 0, 1 do
    local key = bucket_key(base, now_s, span, sub, back)
    if redis.call('HEXISTS', key, field) == 1 then return key end
  end
  return nil
end

local function mark(base, now_s, span, sub, field)
  local key = bucket_key(base, now_s, span, sub, 0)
  redis.call('HSET', key, field, 1)
  redis.call('EXPIREAT', key, (math.floor(now_s / span) + 2) * span)
end
