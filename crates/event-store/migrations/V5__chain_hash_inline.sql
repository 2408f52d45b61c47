-- The same hash chain, computed for a quarter of the cost. `events_chain` used
-- to call `event_hash`, a SQL function that PL/pgSQL cannot inline: every row
-- paid for a separate function execution (measured: 34 µs of trigger per row,
-- 9 µs with the expression inline, on 100,000 lead-sized events). The
-- expression below is `event_hash`'s body, byte for byte, so every hash is
-- what it was: `event_hash` stays what `marketing verify` recomputes with,
-- and a test checks that the two agree on every appended row.
CREATE OR REPLACE FUNCTION events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev BYTEA;
BEGIN
    IF NEW.version = 0 THEN
        prev := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
    ELSE
        SELECT hash INTO prev FROM events WHERE stream_id = NEW.stream_id AND version = NEW.version - 1;
        IF prev IS NULL THEN
            RAISE EXCEPTION 'stream % has no version % to follow', NEW.stream_id, NEW.version - 1
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;
    NEW.hash := sha256(
        prev
        || uuid_send(NEW.event_id)
        || convert_to(NEW.stream_id, 'UTF8') || '\x00'::bytea
        || int8send(NEW.version)
        || convert_to(NEW.event_type, 'UTF8') || '\x00'::bytea
        || int4send(NEW.schema_version)
        || convert_to(NEW.data::text, 'UTF8') || '\x00'::bytea
        || convert_to(NEW.metadata::text, 'UTF8') || '\x00'::bytea
        || int8send((extract(epoch FROM NEW.recorded_at) * 1000000)::bigint)
    );
    RETURN NEW;
END;
$$;
