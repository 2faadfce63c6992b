-- Settle on its own (production settles inside finish).
--! args: p sub token now ok gone window min_requests failure_rate cooldown disable_after
--#include lib/settle.lua
return settle(p, sub, token, now, ok, gone, window, min_requests, failure_rate, cooldown, disable_after)
