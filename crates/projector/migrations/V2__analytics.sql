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
    -- Custom metric name -> exact sum (jsonb numbers are NUMERIC).
    custom_metrics  JSONB NOT NULL,
    -- How many records were added into this row: lets a client average a custom
    -- metric that is not additive (sum / records).
    records         BIGINT NOT NULL,
    -- Also the index for every read: one campaign, a day range, then sources.
    PRIMARY KEY (campaign_id, day, source)
);

-- Campaigns whose CampaignDeleted the projection has applied. A record appended
-- in the instant between the command side's existence check and the delete
-- lands after the delete in the log; this keeps it out of the rollups, on the
-- live run and on every replay alike.
CREATE TABLE analytics_deleted_campaigns (
    campaign_id  UUID PRIMARY KEY
);

-- Adds two custom-metric maps key by key, exactly: the projection's upsert
-- merges a batch's sums into a row with it. (Reads sum set-based instead.)
CREATE FUNCTION analytics_add_custom(total JSONB, addend JSONB) RETURNS JSONB
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN addend = '{}'::jsonb THEN total
        WHEN total = '{}'::jsonb THEN addend
        ELSE (
            SELECT jsonb_object_agg(key, amount)
            FROM (
                SELECT key, sum(value::numeric) AS amount
                FROM (
                    SELECT key, value FROM jsonb_each_text(total)
                    UNION ALL
                    SELECT key, value FROM jsonb_each_text(addend)
                ) AS both_sides
                GROUP BY key
            ) AS sums
        )
    END
$$;
