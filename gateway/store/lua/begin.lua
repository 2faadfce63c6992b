-- Start an attempt (lib/begin.lua).
--! args: p id cycle attempt token lease_ttl now rate burst cap concurrency_wait with_event
--#include lib/begin.lua
return begin(p, id, cycle, attempt, token, lease_ttl, now, rate, burst, cap, concurrency_wait, with_event)
