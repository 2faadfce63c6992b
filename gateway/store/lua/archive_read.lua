-- The archiver's read (gateway.store.archive.ArchiveStore.read): the whole trees of the given archive
-- members in one round trip. For each member, in order:
--   { request hash (flat, empty for an event of no request), { event, ... }, { callback line, ... } }
-- an event being { event_id, event JSON or '' (gone), { delivery, ... } } and a delivery
--   { delivery_id, delivery hash (flat), { attempt log line, ... } }.
-- Read-only: what changes meanwhile re-scores the member, and release then keeps it for the next copy.
--! args: p ...members
local out = {}
for n, member in ipairs(members) do
  local kind, id = string.sub(member, 1, 1), string.sub(member, 3)
  local record, event_ids = {}, { id }
  if kind == 'r' then
    record = redis.call('HGETALL', p .. {{REQ}} .. id)
    event_ids = redis.call('LRANGE', p .. {{REQEVENTS}} .. id, 0, -1)
  end
  local events = {}
  for e, eid in ipairs(event_ids) do
    local json = redis.call('GET', p .. {{EVT}} .. eid)
    local deliveries = {}
    if json then
      local ids = redis.call('SMEMBERS', p .. {{EVTDLV}} .. eid)
      for d, did in ipairs(ids) do
        deliveries[d] = {
          did,
          redis.call('HGETALL', p .. {{DLV}} .. did),
          redis.call('LRANGE', p .. {{DLVLOG}} .. did, 0, -1),
        }
      end
    end
    events[e] = { eid, json or '', deliveries }
  end
  out[n] = { record, events, redis.call('LRANGE', p .. {{CBS}} .. id, 0, -1) }
end
return out
