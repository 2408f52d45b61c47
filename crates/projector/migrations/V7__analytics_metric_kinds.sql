-- What each kind of custom metric needs, per (campaign, day, source, name),
-- beside the plain sum (`value`): how many records carried the metric, the sum
-- of value × impressions, clicks and conversions and of those bases (for
-- weighted averages), and the value of the last record in log order (for
-- `last`). Kept for every metric whatever its declared kind, so declaring or
-- changing a kind applies to all data at once.
--
-- Rows projected before this migration get zeros and a NULL `last`: their
-- averages and last values are unknown (answered as null) until
-- `marketing replay --projection analytics` rebuilds them (docs/analytics.md).
ALTER TABLE analytics_daily_custom
    ADD COLUMN records        BIGINT  NOT NULL DEFAULT 0,
    ADD COLUMN w_impressions  NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN w_clicks       NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN w_conversions  NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN b_impressions  NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN b_clicks       NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN b_conversions  NUMERIC NOT NULL DEFAULT 0,
    ADD COLUMN last           NUMERIC;
