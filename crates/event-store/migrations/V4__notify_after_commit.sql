-- NOTIFY inside the appending transaction serialises every commit behind
-- Postgres' global notification lock, which is held through the commit's WAL
-- flush: appends then cannot share flushes (group commit) and throughput caps
-- at one flush at a time. The appending process now sends one coalesced NOTIFY
-- after its commits instead (see event_store::postgres::Notifier).
DROP TRIGGER events_notify ON events;
DROP FUNCTION events_notify();
