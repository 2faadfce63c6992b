-- The end of an attempt, in one step: the subscription's slot, breaker and failing clock (when
-- there is a subscription), the record and the next attempt's job, the lease given back (only if
-- it is still ours), and, when this was the last delivery of an inbox entry, the entry's XACK + XDEL.
-- A queue target's arq job is written here too, in arq's format, only if the record was written.
-- sub: '' = none (then no settle arguments); entry_id: '' = none; target_job_id: '' = none.
-- The settle arguments (slot_token ... disable_after) come with a subscription; the disable_*
-- job, announcing the subscription's disable if it comes to it, only when the attempt failed.
-- Returns {record status, breaker state ('' without a subscription)}.
--! args: p retention queue sub lease lease_token inbox group entry_id
--! args: target_queue target_job_id target_job_payload
--! args: id cycle status attempts code err now next_at log job_id payload
--! args: slot_token? settle_now? ok? gone? window? min_requests? failure_rate? cooldown? disable_after?
--! args: disable_queue? disable_job_id? disable_job_payload?
--#include lib/record.lua
--#include lib/settle.lua
local state = ''
if sub ~= '' then
  state = settle(p, sub, slot_token, settle_now, ok, gone, window, min_requests, failure_rate, cooldown,
                 disable_after)
  -- The subscription.disabled event's job, written with the disable itself.
  if state == 'disabled' and disable_job_id then
    schedule(disable_queue, disable_job_id, disable_job_payload, tonumber(now))
  end
end
local status = record(p, tonumber(retention), queue, id, cycle, status, attempts, code, err, now, next_at,
                      log, job_id, payload)
if target_job_id ~= '' and status == 'succeeded' then
  schedule(target_queue, target_job_id, target_job_payload, tonumber(now))  -- scored now (the record's)
end
if redis.call('GET', lease) == lease_token then redis.call('DEL', lease) end
if entry_id ~= '' then
  redis.call('XACK', inbox, group, entry_id)
  redis.call('XDEL', inbox, entry_id)
end
return {status, state}
