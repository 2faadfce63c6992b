-- An event, its deliveries, and the start of each one's first attempt, in one step (the fan-out's
-- one round trip before sending). rest: n (delivery_id, target_json, sub_id) triples, then per
-- delivery the 12 - 1 = 11 arguments of begin after the prefix (id, cycle, attempt, token,
-- lease_ttl, now, rate, burst, cap, concurrency_wait, with_event).
-- Returns {created, states, begun}.
--! args: p event_id event_json retention now api_id event_type n ...rest
--#include lib/emit.lua
--#include lib/begin.lua
n = tonumber(n)
local last = n * 3
local out = emit(p, event_id, event_json, tonumber(retention), tonumber(now), api_id, event_type, rest, 1, last)
local begun = {}
for i = 1, n do
  local o = last + 1 + (i - 1) * 11
  if out[2][i] == 'pending' then begun[i] = begin(p, unpack(rest, o, o + 10)) else begun[i] = {out[2][i]} end
end
return {out[1], out[2], begun}
