-- The lead vault: the only tables outside the read models that hold anything
-- derived from a lead's personal data. Deleting a lead deletes its rows here in
-- the same transaction that appends `LeadDeleted`.

-- One row per live lead: the key that opens the personal data sealed in its
-- events. Destroying the row is crypto-shredding: the ciphertext in the
-- (append-only) log can no longer be read by anyone.
CREATE TABLE lead_keys (
    lead_id       UUID PRIMARY KEY,
    campaign_id   UUID NOT NULL,
    -- The 32-byte key in clear when kek_id is NULL; otherwise the key sealed
    -- with the key-encryption key (LEAD_KEY_ENCRYPTION_KEY) that kek_id names.
    key_material  BYTEA NOT NULL,
    kek_id        BYTEA,
    -- The Idempotency-Key of the request that created the lead: its stored
    -- response holds the lead's personal data and is erased with the lead.
    idempotency_project TEXT,
    idempotency_key     TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX lead_keys_by_campaign ON lead_keys (campaign_id);

-- "One lead per email per campaign", enforced by the primary key. A claim is
-- written in the same transaction as the event that gives a lead its email,
-- and removed in the same transaction as the event that takes it away, so no
-- race between two writers (creates, imports, updates) can produce two live
-- leads with one address. The digest is SHA-256 of the campaign and the
-- trimmed, lowercased address: the table never holds the address itself.
CREATE TABLE lead_email_claims (
    campaign_id   UUID NOT NULL,
    email_digest  BYTEA NOT NULL,
    lead_id       UUID NOT NULL,
    PRIMARY KEY (campaign_id, email_digest)
);
CREATE INDEX lead_email_claims_by_lead ON lead_email_claims (lead_id);
