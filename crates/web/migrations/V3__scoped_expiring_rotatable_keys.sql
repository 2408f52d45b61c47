-- Scoped, expiring and rotatable API keys (docs/api-design.md, "API keys").

-- NULL scopes: every scope, including any added later (what keys created
-- without --scope get, and what every key had before scopes existed).
ALTER TABLE api_keys
    ADD COLUMN scopes TEXT[] CHECK (scopes IS NULL OR cardinality(scopes) > 0),
    ADD COLUMN expires_at TIMESTAMPTZ;

-- A key's secrets. Usually one; after `api-key rotate` also the previous ones
-- until their grace period ends (expires_at). The key (its id, project, scopes)
-- stays the same across rotations, so the audit trail and the rate limit
-- follow the key, not the secret.
CREATE TABLE api_key_secrets (
    key_hash    BYTEA PRIMARY KEY,
    key_id      UUID NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    key_prefix  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL while it is the key's current secret.
    expires_at  TIMESTAMPTZ
);

CREATE INDEX api_key_secrets_key_id ON api_key_secrets (key_id);

INSERT INTO api_key_secrets (key_hash, key_id, key_prefix, created_at)
SELECT key_hash, id, key_prefix, created_at FROM api_keys;

ALTER TABLE api_keys DROP COLUMN key_hash;

-- A secret that stops or starts working must reach every process's key cache
-- like any other key change (V2).
CREATE TRIGGER api_key_secrets_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_key_secrets
    FOR EACH STATEMENT EXECUTE FUNCTION api_key_changes_bump();

-- When each key was last used, written in batches by each API process (never
-- per request). A table of its own, without the change trigger: recording use
-- must not drop every process's key cache.
CREATE TABLE api_key_usage (
    key_id        UUID PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    last_used_at  TIMESTAMPTZ NOT NULL
);
