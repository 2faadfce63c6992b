-- A duplicate callback (the receiver had stored the same one before: lua/ingest.lua): log it with
-- the request it belongs to, or with its unmatched event, for history. Nothing else changes: the
-- original was (or will be) correlated and delivered once. Returns the api_id, the event id of an
-- unmatched one, or '' when it belongs to nothing Redis still holds.
--! args: p ckey cb ref at sv kind now link_ttl retention
--#include lib/resolve.lua
--#include lib/callback_log.lua
--#include lib/archive.lua
now, link_ttl, retention = tonumber(now), tonumber(link_ttl), tonumber(retention)
local api_id = resolve(p, ckey, ref, now, link_ttl)
if api_id then
  log_callback(p, api_id, cb, at, now, sv, 'duplicate', kind, link_ttl)
  archive(p .. {{ARCHIVE}}, 'r:' .. api_id)
  return api_id
end
local eid = 'evt_' .. cb
if redis.call('ZSCORE', p .. {{UNMATCHED_LOG}}, eid) then
  log_callback(p, eid, cb, at, now, sv, 'duplicate', kind, retention)
  archive(p .. {{ARCHIVE}}, 'e:' .. eid)
  return eid
end
return ''
