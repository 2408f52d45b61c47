-- The event feed reads one project's events in log order; the project (the
-- tenant) is in every event's metadata.
CREATE INDEX events_by_project ON events ((metadata->>'project'), tx_id, position);
