-- Record an attempt (lib/record.lua) on its own: a delivery ended without an attempt.
--! args: p retention queue id cycle status attempts code err now next_at log job_id payload
--#include lib/record.lua
return record(p, tonumber(retention), queue, id, cycle, status, attempts, code, err, now, next_at, log,
              job_id, payload)
