-- Read models of campaign tasks and the content calendar. As with campaigns,
-- `body` is the resource JSON exactly as served (type json keeps the field
-- order); the other columns exist to filter, sort and check tenancy.

CREATE TABLE tasks (
    id           UUID PRIMARY KEY,
    campaign_id  UUID NOT NULL,
    project      TEXT NOT NULL,
    status       TEXT NOT NULL,
    assigned_to  UUID,
    created_at   TIMESTAMPTZ NOT NULL,
    version      BIGINT NOT NULL,
    body         JSON NOT NULL
);

-- A campaign's tasks in creation order, keyset-paginated on (created_at, id).
CREATE INDEX tasks_by_campaign ON tasks (campaign_id, created_at, id);
CREATE INDEX tasks_by_campaign_status ON tasks (campaign_id, status, created_at, id);
CREATE INDEX tasks_by_campaign_assignee ON tasks (campaign_id, assigned_to, created_at, id);

-- Campaigns the tasks projection has seen deleted. A task created concurrently
-- with its campaign's deletion can land in the log after CampaignDeleted; this
-- set keeps such a task out of the read model.
CREATE TABLE tasks_deleted_campaigns (
    campaign_id  UUID PRIMARY KEY
);

CREATE TABLE content_items (
    id                UUID PRIMARY KEY,
    campaign_id       UUID NOT NULL,
    project           TEXT NOT NULL,
    status            TEXT NOT NULL,
    -- Lowercased, so filters match case-insensitively on an index.
    content_type_key  TEXT NOT NULL,
    platform_key      TEXT,
    scheduled_date    TIMESTAMPTZ,
    version           BIGINT NOT NULL,
    body              JSON NOT NULL
);

-- The calendar: by scheduled_date (unscheduled items last), then id.
CREATE INDEX content_calendar ON content_items (campaign_id, scheduled_date, id);
CREATE INDEX content_calendar_by_status ON content_items (campaign_id, status, scheduled_date, id);

CREATE TABLE content_deleted_campaigns (
    campaign_id  UUID PRIMARY KEY
);

-- Every media file any event ever attached to a content item, kept after the
-- item moves on to another file or is deleted: the history still names it, so a
-- past version can be downloaded and garbage collection must keep it.
CREATE TABLE content_media (
    content_id  UUID NOT NULL,
    sha256      TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    file_name   TEXT,
    PRIMARY KEY (content_id, sha256)
);

CREATE INDEX content_media_by_hash ON content_media (sha256);
