-- Webhook endpoints: where a project wants its events POSTed.
CREATE TABLE webhook_endpoints (
    id              UUID PRIMARY KEY,
    project         TEXT NOT NULL,
    url             TEXT NOT NULL,
    description     TEXT,
    -- CloudEvent types (`com.marketing.campaign.created.v1`) or '*'.
    events          TEXT[] NOT NULL,
    enabled         BOOLEAN NOT NULL DEFAULT true,
    -- Why the dispatcher disabled it (failing for too long); NULL otherwise.
    disabled_reason TEXT,
    -- `whsec_...`. Kept readable: every delivery is signed with it.
    secret          TEXT NOT NULL,
    -- The secret before the last rotation, still signed with until it expires,
    -- so receivers can switch over without dropping deliveries.
    previous_secret TEXT,
    previous_secret_expires_at TIMESTAMPTZ,
    -- Start of the current run of failed attempts; NULL after a success.
    failing_since   TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_endpoints_by_project ON webhook_endpoints (project, created_at, id);

-- The outbox: one row per event per endpoint it matched, written by the
-- dispatcher's fan-out in the transaction that moves its checkpoint, so every
-- event reaches every matching endpoint's outbox exactly once.
CREATE TABLE webhook_deliveries (
    endpoint_id     UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        UUID NOT NULL,
    -- The event's log position: the order of deliveries of one aggregate.
    tx_id           BIGINT NOT NULL,
    position        BIGINT NOT NULL,
    -- The aggregate (stream) the event belongs to: deliveries of one
    -- aggregate to one endpoint go out one at a time, in log order.
    stream_id       TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    -- pending: to be sent; delivered: a 2xx came back; failed: given up.
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- Start of the retry window (first attempt, or the last manual retry).
    first_attempt_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, event_id)
);
-- The head of each aggregate's queue, and what is due.
CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (endpoint_id, stream_id, tx_id, position)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';

-- Every attempt, for the deliveries list.
CREATE TABLE webhook_attempts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id     UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        UUID NOT NULL,
    event_type      TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    attempted_at    TIMESTAMPTZ NOT NULL,
    status_code     INTEGER,
    latency_ms      BIGINT NOT NULL,
    error           TEXT,
    -- When the next attempt is due; NULL after a success or when given up.
    next_retry_at   TIMESTAMPTZ
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, id);
