-- One tombstone mechanism for every projection of campaign-owned rows (tasks,
-- content, leads, analytics) instead of a table each: the campaigns whose
-- `CampaignDeleted` a projection has applied. A row created concurrently with
-- its campaign's deletion can land in the log after the `CampaignDeleted`;
-- this set keeps it out of the projection's read model (and lets the leads
-- projection erase such a lead on arrival), on the live run and on every replay.
CREATE TABLE campaign_tombstones (
    projection   TEXT NOT NULL,
    campaign_id  UUID NOT NULL,
    deleted_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, campaign_id)
);

INSERT INTO campaign_tombstones (projection, campaign_id)
    SELECT 'tasks', campaign_id FROM tasks_deleted_campaigns;
INSERT INTO campaign_tombstones (projection, campaign_id)
    SELECT 'content', campaign_id FROM content_deleted_campaigns;
INSERT INTO campaign_tombstones (projection, campaign_id)
    SELECT 'analytics', campaign_id FROM analytics_deleted_campaigns;
INSERT INTO campaign_tombstones (projection, campaign_id, deleted_at)
    SELECT 'leads', campaign_id, erased_at FROM lead_erased_campaigns;

DROP TABLE tasks_deleted_campaigns, content_deleted_campaigns, analytics_deleted_campaigns,
           lead_erased_campaigns;
