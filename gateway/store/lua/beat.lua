-- A worker's heartbeat: score it now, drop members older than the TTL, renew the set's TTL.
-- Returns how many workers are alive.
--! keys: workers
--! args: member now ttl_ms
redis.call('ZADD', workers, now, member)
redis.call('ZREMRANGEBYSCORE', workers, '-inf', tonumber(now) - tonumber(ttl_ms))
redis.call('PEXPIRE', workers, ttl_ms)
return redis.call('ZCARD', workers)
