-- Analytics rollups, kept by the `analytics` projection from AnalyticsRecorded
-- events: one row per campaign, UTC day and source, holding exact sums, so reads
-- never scan the raw events. Counts are NUMERIC too: a sum can never overflow
-- and stop the projection, and every amount stays exact.
CREATE TABLE analytics_daily (
    campaign_id     UUID NOT NULL,
    day             DATE NOT NULL,
    source          TEXT NOT NULL,
    impressions     NUMERIC NOT NULL,
    clicks          NUMERIC NOT NULL,
    conversions     NUMERIC NOT NULL,
    cost            NUMERIC NOT NULL,
    revenue         NUMERIC NOT NULL,
    -- How many records were added into this row: lets a client average a custom
    -- metric that is not additive (sum / records).
    records         BIGINT NOT NULL,
    -- Also the index for every read: one campaign, a day range, then sources.
    PRIMARY KEY (campaign_id, day, source)
);

-- The custom metrics of the same rows, one row per metric name, summed the same
-- way. Kept apart (not a JSONB column) so reads sum them with plain indexed
-- aggregates instead of parsing a document per row.
CREATE TABLE analytics_daily_custom (
    campaign_id  UUID NOT NULL,
    day          DATE NOT NULL,
    source       TEXT NOT NULL,
    name         TEXT NOT NULL,
    value        NUMERIC NOT NULL,
    PRIMARY KEY (campaign_id, day, source, name)
);

-- Campaigns whose CampaignDeleted the projection has applied. A record appended
-- in the instant between the command side's existence check and the delete
-- lands after the delete in the log; this keeps it out of the rollups, on the
-- live run and on every replay alike.
CREATE TABLE analytics_deleted_campaigns (
    campaign_id  UUID PRIMARY KEY
);
