-- Acknowledge an inbox entry and delete it (a script, so that it shares the worker's pipelines).
--! keys: inbox
--! args: group entry_id
redis.call('XACK', inbox, group, entry_id)
return redis.call('XDEL', inbox, entry_id)
