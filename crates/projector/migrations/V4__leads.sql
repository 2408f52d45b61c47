-- Leads as the query API serves them. `body` is the resource JSON exactly as
-- the command side returns it (type json keeps the field order); the other
-- columns exist to filter, sort, search and check tenancy without parsing it.
-- This table holds personal data in clear while a lead lives (search needs
-- it); the row is deleted with the lead, and with its campaign.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE leads (
    id           UUID PRIMARY KEY,
    campaign_id  UUID NOT NULL,
    project      TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    version      BIGINT NOT NULL,
    -- name, email and phone, lowercased, one per line: what `search` matches.
    search_text  TEXT NOT NULL,
    body         JSON NOT NULL
);

-- Listing is newest first, keyset-paginated on (created_at, id), per campaign;
-- export reads the same index backwards (oldest first).
CREATE INDEX leads_by_campaign ON leads (campaign_id, created_at DESC, id DESC);
CREATE INDEX leads_by_campaign_status ON leads (campaign_id, status, created_at DESC, id DESC);
-- Substring search inside one campaign: trigrams of search_text, with the
-- campaign as a second GIN key (btree_gin) so a search touches only that
-- campaign's posting lists.
CREATE INDEX leads_search ON leads USING gin (campaign_id, search_text gin_trgm_ops);

-- Campaigns whose deletion the leads projection has applied. A lead created
-- concurrently with its campaign's deletion can reach the log after the
-- `CampaignDeleted`; this table lets the projection erase it on arrival.
CREATE TABLE lead_erased_campaigns (
    campaign_id  UUID PRIMARY KEY,
    erased_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
