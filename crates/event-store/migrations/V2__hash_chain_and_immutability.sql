-- Tamper evidence: every event carries a SHA-256 over its own content and the
-- hash of the previous event of its stream, computed by the database itself at
-- insert, so no writer can forget or fake it. `marketing verify` recomputes the
-- chains with the same function.

-- The canonical bytes of an event: every stored field, length-safe (text fields
-- end with a NUL, numbers are fixed-width), JSON as jsonb's canonical text.
CREATE FUNCTION event_hash(
    prev_hash BYTEA, event_id UUID, stream_id TEXT, version BIGINT, event_type TEXT,
    schema_version INTEGER, data JSONB, metadata JSONB, recorded_at TIMESTAMPTZ
) RETURNS BYTEA LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT sha256(
        prev_hash
        || uuid_send(event_id)
        || convert_to(stream_id, 'UTF8') || '\x00'::bytea
        || int8send(version)
        || convert_to(event_type, 'UTF8') || '\x00'::bytea
        || int4send(schema_version)
        || convert_to(data::text, 'UTF8') || '\x00'::bytea
        || convert_to(metadata::text, 'UTF8') || '\x00'::bytea
        || int8send((extract(epoch FROM recorded_at) * 1000000)::bigint)
    )
$$;

-- The hash a stream's first event chains to.
CREATE FUNCTION event_hash_genesis() RETURNS BYTEA LANGUAGE sql IMMUTABLE AS $$
    SELECT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
$$;

ALTER TABLE events ADD COLUMN hash BYTEA;

-- Chain whatever an earlier version of the schema stored.
DO $$
DECLARE
    e RECORD;
    prev BYTEA;
    prev_stream TEXT := NULL;
BEGIN
    FOR e IN SELECT * FROM events ORDER BY stream_id, version LOOP
        IF prev_stream IS DISTINCT FROM e.stream_id THEN
            prev := event_hash_genesis();
            prev_stream := e.stream_id;
        END IF;
        prev := event_hash(prev, e.event_id, e.stream_id, e.version, e.event_type,
                           e.schema_version, e.data, e.metadata, e.recorded_at);
        UPDATE events SET hash = prev WHERE position = e.position;
    END LOOP;
END;
$$;

ALTER TABLE events ALTER COLUMN hash SET NOT NULL;

-- Fills in the hash. A row-level BEFORE trigger sees the rows an INSERT wrote
-- before it in the same statement, so several events of one stream appended
-- together chain correctly. A missing predecessor is refused: streams stay
-- gap-free even for writers that bypass the store's own guard.
CREATE FUNCTION events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev BYTEA;
BEGIN
    IF NEW.version = 0 THEN
        prev := event_hash_genesis();
    ELSE
        SELECT hash INTO prev FROM events WHERE stream_id = NEW.stream_id AND version = NEW.version - 1;
        IF prev IS NULL THEN
            RAISE EXCEPTION 'stream % has no version % to follow', NEW.stream_id, NEW.version - 1
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    NEW.hash := event_hash(prev, NEW.event_id, NEW.stream_id, NEW.version, NEW.event_type,
                           NEW.schema_version, NEW.data, NEW.metadata, NEW.recorded_at);
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_chain BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_chain();

-- The log is append-only. (Crypto-shredding deletes keys, never events.)
CREATE FUNCTION events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_immutable();
