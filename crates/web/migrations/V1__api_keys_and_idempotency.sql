-- API keys. Only a SHA-256 of the secret is stored: the secrets are 256-bit
-- random values, so a fast hash is enough, and a leaked table reveals no key.
CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    project     TEXT NOT NULL,
    name        TEXT NOT NULL,
    key_hash    BYTEA NOT NULL UNIQUE,
    -- The first characters of the secret, to recognise a key in listings.
    key_prefix  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

-- Responses to POSTs that carried an Idempotency-Key, replayed on retries.
CREATE TABLE idempotency_keys (
    project        TEXT NOT NULL,
    key            TEXT NOT NULL,
    -- SHA-256 of method, path and body: the same key with another request is a 409.
    request_hash   BYTEA NOT NULL,
    -- NULL while the first request is still running.
    status_code    INTEGER,
    response_headers JSONB,
    response_body  BYTEA,
    -- A claim older than this was abandoned (crash) and may be taken over.
    locked_until   TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
