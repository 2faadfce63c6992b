-- Store an event and its delivery records once (the library's emit on its own; production emits
-- with emit_begin). deliveries: (delivery_id, target_json, sub_id) triples. Returns {created, states}.
--! args: p event_id event_json retention now api_id event_type ...deliveries
--#include lib/emit.lua
return emit(p, event_id, event_json, tonumber(retention), tonumber(now), api_id, event_type, deliveries, 1,
            #deliveries)
