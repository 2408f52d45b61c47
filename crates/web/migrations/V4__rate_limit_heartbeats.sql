-- The API processes alive now, so each can enforce its share of every key's
-- rate limit (crates/web/src/rate_limit.rs): each writes its row every second
-- and counts the rows written in the last few; a process that stops cleanly
-- deletes its row. Never read on a request's path.
CREATE TABLE rate_limit_processes (
    id            UUID PRIMARY KEY,
    -- 'all' (marketing serve), 'commands' or 'queries': processes share a
    -- key's limit with those serving the same routes.
    serves        TEXT NOT NULL CHECK (serves IN ('all', 'commands', 'queries')),
    heartbeat_at  TIMESTAMPTZ NOT NULL
);
