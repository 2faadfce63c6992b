-- After the archiver copied trees to PostgreSQL: for each one whose score is still the one it read
-- (nothing changed since; a change re-scores it, lib/archive.lua), remove it from the archive and,
-- if it is settled (final, no delivery pending), let Redis forget it: its request record loses its
-- result payload and is marked archived ('h'; reads go to PostgreSQL), it leaves the request and
-- delivery indexes (lists read PostgreSQL), and its events, deliveries and attempt logs expire
-- within hot_ms (never later than they would have). A dead letter (a failed delivery) stays, with
-- its event: it is there to be retried. items: groups of
--   member score settled api_id status
-- The tree is walked here, as archive_read.lua read it: an unchanged score means it is the same.
-- Returns how many members were removed.
--! args: p hot_ms ...items
hot_ms = tonumber(hot_ms)

local function expire(key)
  local left = redis.call('PTTL', key)
  if left > hot_ms then redis.call('PEXPIRE', key, hot_ms) end
end

local function forget_event(eid)
  local dead = false
  for _, did in ipairs(redis.call('SMEMBERS', p .. {{EVTDLV}} .. eid)) do
    local dkey = p .. {{DLV}} .. did
    local d = redis.call('HMGET', dkey, 'event_type', 'status', 'sub')
    if d[2] == 'failed' then
      dead = true
    elseif d[2] then
      redis.call('ZREM', p .. {{DELIVERIES}}, did)
      redis.call('ZREM', p .. {{DELIVERIES_TYPE}} .. (d[1] or ''), did)
      redis.call('ZREM', p .. {{DELIVERIES_STATUS}} .. d[2], did)
      if d[3] and d[3] ~= '' then redis.call('ZREM', p .. {{DELIVERIES_SUB}} .. d[3], did) end
      expire(dkey)
      expire(p .. {{DLVLOG}} .. did)
    end
  end
  if not dead then
    expire(p .. {{EVT}} .. eid)
    expire(p .. {{EVTDLV}} .. eid)
  end
end

local removed = 0
for i = 1, #items, 5 do
  local member, score, settled, api_id, status = items[i], items[i + 1], items[i + 2], items[i + 3], items[i + 4]
  local cur = redis.call('ZSCORE', p .. {{ARCHIVE}}, member)
  if cur and tonumber(cur) == tonumber(score) then
    redis.call('ZREM', p .. {{ARCHIVE}}, member)
    removed = removed + 1
    if settled == '1' then
      if api_id ~= '' then
        local rkey = p .. {{REQ}} .. api_id
        if redis.call('EXISTS', rkey) == 1 then redis.call('HDEL', rkey, 'x'); redis.call('HSET', rkey, 'h', 1) end
        redis.call('ZREM', p .. {{REQUESTS}} .. status, api_id)
        local evkey = p .. {{REQEVENTS}} .. api_id
        for _, eid in ipairs(redis.call('LRANGE', evkey, 0, -1)) do forget_event(eid) end
        expire(evkey)
        expire(p .. {{CBS}} .. api_id)
      else -- an event of no request (an unmatched callback): the member names it
        local eid = string.sub(member, 3)
        forget_event(eid)
        expire(p .. {{CBS}} .. eid)
        redis.call('ZREM', p .. {{UNMATCHED_LOG}}, eid)
      end
    end
  end
end
return removed
