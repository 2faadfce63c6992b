-- A callback as it was received, in the log of what it belongs to (``cbs:{api_id}``, or
-- ``cbs:{event_id}`` for an unmatched one), for history's callbacks table (gateway.store.archive
-- reads it; its payload is its event's data). One tab-separated line:
--   callback_id, received at (ms), handled at (ms), signature version, outcome, kind
-- and the owner marked as changed for the archiver.
--#include lib/archive.lua
local function log_callback(p, owner, member, cb, at, now, sv, outcome, kind, ttl_s)
  local key = p .. {{CBS}} .. owner
  redis.call('RPUSH', key, cb .. '\t' .. at .. '\t' .. now .. '\t' .. sv .. '\t' .. outcome .. '\t' .. kind)
  redis.call('EXPIRE', key, ttl_s)
  archive(p .. {{ARCHIVE}}, member)
end
