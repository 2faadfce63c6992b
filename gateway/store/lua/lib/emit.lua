--#include lib/trim.lua
--#include lib/archive.lua
-- Store an event and its delivery records once. dl holds (delivery_id, target_json, sub_id)
-- triples from index first to last. Returns {created, states}.
local function emit(p, eid, event_json, ret, now, api_id, etype, dl, first, last)
  local cutoff = now - ret * 1000
  local created = redis.call('SET', p .. {{EVT}} .. eid, event_json, 'NX', 'EX', ret)
  if created then
    if api_id ~= '' then
      redis.call('RPUSH', p .. {{REQEVENTS}} .. api_id, eid)
      redis.call('EXPIRE', p .. {{REQEVENTS}} .. api_id, ret)
    end
    local idx = {p .. {{DELIVERIES}}, p .. {{DELIVERIES_STATUS}} .. 'pending', p .. {{DELIVERIES_TYPE}} .. etype}
    for i = first, last, 3 do
      local id, sub = dl[i], dl[i + 2]
      local dkey = p .. {{DLV}} .. id
      redis.call('HSET', dkey, 'id', id, 'event_id', eid, 'event_type', etype, 'target', dl[i + 1],
                 'sub', sub, 'status', 'pending', 'attempts', 0, 'cycle', 0, 'deferrals', 0,
                 'created_at', now, 'updated_at', now)
      if api_id ~= '' then redis.call('HSET', dkey, 'api_id', api_id) end
      redis.call('EXPIRE', dkey, ret)
      redis.call('SADD', p .. {{EVTDLV}} .. eid, id)
      for _, k in ipairs(idx) do redis.call('ZADD', k, now, id) end
      if sub ~= '' then
        redis.call('ZADD', p .. {{DELIVERIES_SUB}} .. sub, now, id)
        trim(p .. {{DELIVERIES_SUB}} .. sub, cutoff)
      end
    end
    if last >= first then
      redis.call('EXPIRE', p .. {{EVTDLV}} .. eid, ret)
      for _, k in ipairs(idx) do trim(k, cutoff) end
    end
    archive(p .. {{ARCHIVE}}, api_id ~= '' and ('r:' .. api_id) or ('e:' .. eid))
  end
  -- Whoever waits on the request (GET ?wait=, SSE) finds its event stored from now on.
  if api_id ~= '' then redis.call('PUBLISH', p .. {{NOTIFY}}, api_id) end
  local states = {}
  for i = first, last, 3 do
    states[#states + 1] = redis.call('HGET', p .. {{DLV}} .. dl[i], 'status') or 'missing'
  end
  return {created and 1 or 0, states}
end
