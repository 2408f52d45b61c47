-- The dispatcher runs in shards (the projections' shard function: by
-- campaign), each with its own checkpoint, lock and sender. A delivery
-- belongs to the shard of its event's campaign, so one aggregate's
-- deliveries are always in one shard and keep their order.
ALTER TABLE webhook_deliveries
    -- The event's campaign (NULL: it names none, shard 0); kept so that a
    -- change of shard count can move pending deliveries to their new shard.
    ADD COLUMN campaign_id UUID,
    -- The shard index, of the shard count in force, that sends it.
    ADD COLUMN shard INTEGER NOT NULL DEFAULT 0,
    -- When it was delivered or given up: the retention clock.
    ADD COLUMN finished_at TIMESTAMPTZ;

-- Pending deliveries written before shards get their campaign from the log
-- (the rule of `projector::campaign_of`: a campaign stream's own id, else the
-- metadata's campaign_id, else the data's).
UPDATE webhook_deliveries d
SET campaign_id = c.id::uuid
FROM (
    SELECT e.event_id, CASE
            WHEN starts_with(e.stream_id, 'campaign-') THEN substr(e.stream_id, 10)
            ELSE COALESCE(e.metadata ->> 'campaign_id', e.data ->> 'campaign_id')
        END AS id
    FROM events e
) c
WHERE c.event_id = d.event_id AND d.state = 'pending'
  -- What does not parse names no campaign, as in campaign_of.
  AND c.id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

-- Finished deliveries written before retention: finished at their last attempt.
UPDATE webhook_deliveries d
SET finished_at = COALESCE(
        (SELECT max(a.attempted_at) FROM webhook_attempts a
         WHERE a.endpoint_id = d.endpoint_id AND a.event_id = d.event_id),
        d.created_at)
WHERE d.state <> 'pending';

DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (shard, next_attempt_at)
    WHERE state = 'pending';
-- What the retention purge deletes.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE state <> 'pending';
CREATE INDEX webhook_attempts_by_time ON webhook_attempts (attempted_at);
