-- The columns `GET /campaigns` searches and sorts on besides created_at:
-- the name (lowercased: search is case-insensitive, and so is the name
-- order) and the two dates, which a campaign may lack (NULL).
ALTER TABLE campaigns
    ADD COLUMN name_key   TEXT NOT NULL DEFAULT '',
    ADD COLUMN start_date TIMESTAMPTZ,
    ADD COLUMN end_date   TIMESTAMPTZ;

-- Rows projected before this migration: from the stored resource. (The
-- projection writes the columns from now on; a replay rebuilds them.)
UPDATE campaigns SET
    name_key   = lower(body->>'name'),
    start_date = (body->>'start_date')::timestamptz,
    end_date   = (body->>'end_date')::timestamptz;

-- One index per sort, each also serving its keyset cursor (see
-- query-api's campaigns list). Campaigns without the date are one group
-- (`IS NULL`), ordered by id.
CREATE INDEX campaigns_by_project_name ON campaigns (project, name_key, id);
CREATE INDEX campaigns_by_project_start ON campaigns (project, (start_date IS NULL), start_date, id);
CREATE INDEX campaigns_by_project_end ON campaigns (project, (end_date IS NULL), end_date, id);
-- Substring search on the name within a project (pg_trgm and btree_gin come
-- with the leads migration).
CREATE INDEX campaigns_name_search ON campaigns USING gin (project, name_key gin_trgm_ops);
