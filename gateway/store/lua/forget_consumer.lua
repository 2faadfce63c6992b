-- Remove a consumer from the inbox's group only if it holds no entry: XGROUP DELCONSUMER drops the
-- entries a consumer holds, and nobody would claim them again. Checked in the same script, so an
-- entry read between a check and the delete cannot be lost.
--! keys: inbox
--! args: group consumer
if #redis.call('XPENDING', inbox, group, '-', '+', 1, consumer) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', inbox, group, consumer)
return 1
