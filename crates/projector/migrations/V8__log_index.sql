-- The index of an event log kept outside Postgres (KurrentDB): one row per
-- event, where it is and what the log's readers select on (campaign history
-- by the data's campaign_id, the event feed by the metadata's project and
-- either campaign_id, webhooks by event id), no body: bodies are read from
-- the store. Written by the `log_index` projection, which runs only when the
-- log is in KurrentDB; on the Postgres backend the table stays empty and the
-- readers query `events` (docs/kurrentdb.md).
CREATE TABLE log_index (
    tx_id                 BIGINT      NOT NULL,
    position              BIGINT      NOT NULL,
    stream_id             TEXT        NOT NULL,
    version               BIGINT      NOT NULL,
    event_id              UUID        NOT NULL,
    event_type            TEXT        NOT NULL,
    campaign_id           TEXT,
    metadata_campaign_id  TEXT,
    project               TEXT,
    recorded_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream_id, version)
);

CREATE INDEX log_index_position ON log_index (tx_id, position);
CREATE INDEX log_index_campaign ON log_index (campaign_id, tx_id, position) WHERE campaign_id IS NOT NULL;
CREATE INDEX log_index_project ON log_index (project, tx_id, position);
CREATE INDEX log_index_event_id ON log_index (event_id);
