-- History: what the gateway did, kept for GATEWAY_RETENTION. Every table is partitioned by day on
-- its time column (gateway.history.partitions creates them ahead and drops whole days past the
-- retention: purging is O(partitions), never a DELETE over rows). Primary keys include the
-- partition column, as PostgreSQL requires; every id's time is fixed when it is first written,
-- so an upsert always finds its row.

CREATE TABLE requests (
    api_id        text        NOT NULL,
    submitted_at  timestamptz NOT NULL,
    status        text        NOT NULL,
    resource      text        NOT NULL DEFAULT '',
    method        text        NOT NULL DEFAULT 'POST',
    finished_at   timestamptz,
    metadata      jsonb       NOT NULL DEFAULT '{}',
    record        jsonb       NOT NULL,           -- the request as GET /v1/requests/{api_id} shows it
    archived_at   timestamptz NOT NULL DEFAULT now(),
    erased_at     timestamptz,
    PRIMARY KEY (api_id, submitted_at)
) PARTITION BY RANGE (submitted_at);
CREATE INDEX requests_status_time ON requests (status, submitted_at DESC);
CREATE INDEX requests_time ON requests (submitted_at DESC);

CREATE TABLE events (
    event_id      text        NOT NULL,
    created_at    timestamptz NOT NULL,
    api_id        text,
    type          text        NOT NULL,
    body          jsonb       NOT NULL,           -- the event exactly as delivered
    erased_at     timestamptz,
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX events_api_id ON events (api_id, created_at) WHERE api_id IS NOT NULL;
CREATE INDEX events_type_time ON events (type, created_at DESC);

CREATE TABLE deliveries (
    delivery_id     text        NOT NULL,
    created_at      timestamptz NOT NULL,
    event_id        text        NOT NULL,
    api_id          text,
    event_type      text        NOT NULL,
    subscription_id text,
    target          jsonb       NOT NULL,
    status          text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    cycle           integer     NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL,
    record          jsonb       NOT NULL,         -- the delivery record as the deliveries API shows it
    PRIMARY KEY (delivery_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX deliveries_status_time ON deliveries (status, created_at DESC);
CREATE INDEX deliveries_sub_time ON deliveries (subscription_id, created_at DESC) WHERE subscription_id IS NOT NULL;
CREATE INDEX deliveries_type_time ON deliveries (event_type, created_at DESC);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_time ON deliveries (created_at DESC);

CREATE TABLE attempts (
    delivery_id   text        NOT NULL,
    cycle         integer     NOT NULL,
    attempt       integer     NOT NULL,
    at            timestamptz NOT NULL,
    event_id      text        NOT NULL,
    api_id        text,
    target        text        NOT NULL,           -- the webhook URL or queue name
    outcome       text        NOT NULL,
    status_code   integer,
    duration_ms   double precision,
    error         text,
    response      text,                           -- the answer's excerpt
    erased_at     timestamptz,
    PRIMARY KEY (delivery_id, cycle, attempt, at)
) PARTITION BY RANGE (at);
CREATE INDEX attempts_api_id ON attempts (api_id, at) WHERE api_id IS NOT NULL;
CREATE INDEX attempts_time ON attempts (at DESC);
