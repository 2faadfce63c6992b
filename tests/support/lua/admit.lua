-- Admission on its own (production admits inside begin).
--! args: p sub now rate burst cap token slot_ttl concurrency_wait
--#include lib/admit.lua
return admit(p, sub, tonumber(now), tonumber(rate), tonumber(burst), tonumber(cap), token, tonumber(slot_ttl),
             tonumber(concurrency_wait))
