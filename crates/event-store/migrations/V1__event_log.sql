-- The event log: the single source of truth. Rows are only ever inserted.
CREATE TABLE events (
    -- Global position from a sequence. NOT commit order: see tx_id.
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The inserting transaction (xid8 as bigint). Readers follow the log in
    -- (tx_id, position) order and only read rows whose transaction is older than
    -- every transaction still running, so no in-flight event can be skipped.
    tx_id           BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id        UUID NOT NULL,
    stream_id       TEXT NOT NULL,
    version         BIGINT NOT NULL CHECK (version >= 0),
    event_type      TEXT NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version >= 1),
    data            JSONB NOT NULL,
    metadata        JSONB NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    -- Idempotent append: an event id is stored once.
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Optimistic concurrency, enforced by the database: one event per stream version.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX events_commit_order ON events (tx_id, position);

-- Wake readers. A statement-level trigger fires once per INSERT statement, and
-- Postgres folds identical notifications of one transaction into one, so a
-- transaction sends at most one. Readers treat it as a hint and also poll.
CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('marketing_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();
