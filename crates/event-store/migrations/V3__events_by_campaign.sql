-- Audit reads: every event that concerns a campaign (its own stream, and the
-- tasks, content, leads and analytics whose events carry its id), in log order.
-- `campaign_id` is the one correlation key the store indexes; events of a
-- campaign's own stream carry it too.
CREATE INDEX events_by_campaign ON events ((data->>'campaign_id'), tx_id, position)
    WHERE data ? 'campaign_id';
