-- Asynchronous lead imports (`Prefer: respond-async`, docs/leads.md). Here,
-- with the vault, because the error rows hold rows of an uploaded file in
-- clear: personal data outside the log, erased by the retention sweep.

-- One row per import job. The worker that holds the lease (lease_owner until
-- lease_until) processes the spooled file in chunks; each chunk's leads, its
-- error rows and the counters below (with last_line) commit in one
-- transaction, guarded by the lease, so a job resumed by another process
-- neither skips nor repeats a row.
CREATE TABLE lead_imports (
    id            UUID PRIMARY KEY,
    project       TEXT NOT NULL,
    campaign_id   UUID NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed')),
    -- The uploaded file in the media store (crates/media, spool objects);
    -- NULL once deleted (the job finished).
    spool_key     TEXT,
    file_bytes    BIGINT NOT NULL,
    -- Metadata of the events the job appends (who imported, request id).
    metadata      JSONB NOT NULL,
    -- The file's header row, as uploaded: the columns of the errors CSV.
    columns       JSONB,
    rows          BIGINT NOT NULL DEFAULT 0,
    imported      BIGINT NOT NULL DEFAULT 0,
    duplicates    BIGINT NOT NULL DEFAULT 0,
    failed        BIGINT NOT NULL DEFAULT 0,
    -- Physical line of the last row processed (0: none yet; the header is line 1).
    last_line     BIGINT NOT NULL DEFAULT 0,
    -- Why the job failed, for `failed` jobs.
    failure       TEXT,
    attempts      INT NOT NULL DEFAULT 0,
    lease_owner   UUID,
    lease_until   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ
);
-- The worker's claim: unfinished jobs, oldest first.
CREATE INDEX lead_imports_unfinished ON lead_imports (created_at) WHERE state IN ('queued', 'running');
-- The retention sweep.
CREATE INDEX lead_imports_finished ON lead_imports (finished_at) WHERE finished_at IS NOT NULL;

-- Every row of a job that was not imported: invalid (`kind` 'invalid') or a
-- duplicate email ('duplicate'), with the row's fields as uploaded.
CREATE TABLE lead_import_errors (
    import_id     UUID NOT NULL REFERENCES lead_imports (id) ON DELETE CASCADE,
    line          BIGINT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('invalid', 'duplicate')),
    field         TEXT,
    message       TEXT NOT NULL,
    fields        JSONB NOT NULL,
    PRIMARY KEY (import_id, line)
);
