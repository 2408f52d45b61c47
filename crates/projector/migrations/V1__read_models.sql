-- Where each projection has got to in the log, written in the same transaction
-- as the read-model rows it covers.
CREATE TABLE projection_checkpoints (
    name        TEXT PRIMARY KEY,
    tx_id       BIGINT NOT NULL DEFAULT 0,
    position    BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Campaigns as the query API serves them. `body` is the resource JSON exactly as
-- returned (type json keeps the field order); the other columns exist to filter,
-- sort and check tenancy without parsing it.
CREATE TABLE campaigns (
    id             UUID PRIMARY KEY,
    project        TEXT NOT NULL,
    status         TEXT NOT NULL,
    campaign_type  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    version        BIGINT NOT NULL,
    body           JSON NOT NULL
);

-- Listing is newest first, keyset-paginated on (created_at, id), per project.
CREATE INDEX campaigns_by_project ON campaigns (project, created_at DESC, id DESC);
CREATE INDEX campaigns_by_project_status ON campaigns (project, status, created_at DESC, id DESC);
