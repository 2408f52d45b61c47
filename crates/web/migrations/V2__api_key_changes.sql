-- A counter that moves whenever api_keys changes, however it changes (the CLI,
-- another process, plain SQL). Each API process caches keys and polls this one
-- row to learn when its cache is stale (crates/web/src/auth/cache.rs): one cheap
-- read per process every few hundred milliseconds instead of a key lookup per
-- request.
CREATE TABLE api_key_changes (
    -- Exactly one row.
    singleton   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    generation  BIGINT NOT NULL
);

INSERT INTO api_key_changes (singleton, generation) VALUES (TRUE, 0);

-- In the same transaction as the change, so a process that reads the new
-- generation also reads the change. Per statement, not per row: one bump is
-- enough for any number of rows. Key changes are rare, so serialising them on
-- this row costs nothing that matters.
CREATE FUNCTION api_key_changes_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE api_key_changes SET generation = generation + 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION api_key_changes_bump();
