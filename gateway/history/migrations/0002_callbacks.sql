-- Callbacks as received: one row per receipt (a duplicate has its own), partitioned by day on the
-- time it was received like the other tables (gateway.history.partitions).
CREATE TABLE callbacks (
    callback_id       text        NOT NULL,
    received_at       timestamptz NOT NULL,
    api_id            text,                     -- NULL: it matched no request (unmatched)
    event_id          text        NOT NULL,     -- the event it became (its payload is the event's data)
    handled_at        timestamptz NOT NULL,     -- when the worker correlated it
    kind              text        NOT NULL,     -- result | message | call | status | unknown
    outcome           text        NOT NULL,     -- matched | late | stale | extra | replay | duplicate | unmatched
    signature_version text,                     -- v3 | v2; NULL with verification off
    early             boolean     NOT NULL DEFAULT false,  -- it came before its submit had finished
    payload           jsonb,                    -- its parameters as received; NULL once erased
    erased_at         timestamptz,
    PRIMARY KEY (callback_id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX callbacks_api_id ON callbacks (api_id, received_at) WHERE api_id IS NOT NULL;
CREATE INDEX callbacks_outcome_time ON callbacks (outcome, received_at DESC);
