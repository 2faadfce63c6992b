-- A callback as it was received, in the log of what it belongs to (``cbs:{api_id}``, or
-- ``cbs:{event_id}`` for an unmatched one), for history's callbacks table (gateway.store.archive
-- reads it; its payload is its event's data). One tab-separated line:
--   callback_id, received at (ms), handled at (ms), signature version, outcome, kind
-- The owner is marked as changed for the archiver by the emit that follows (lib/emit.lua), or by
-- the caller (callback_dup.lua, whose duplicate emits nothing).
local function log_callback(p, owner, cb, at, now, sv, outcome, kind, ttl_s)
  local key = p .. {{CBS}} .. owner
  if redis.call('RPUSH', key, cb .. '\t' .. at .. '\t' .. now .. '\t' .. sv .. '\t' .. outcome .. '\t' .. kind) == 1 then
    redis.call('EXPIRE', key, ttl_s)
  end
end
