//! The lead vault: per-lead encryption keys and per-campaign email claims.
//!
//! These are the only rows outside the read models derived from a lead's
//! personal data, so they live apart from the log, in tables of their own
//! (`lead_keys`, `lead_email_claims`, migration set `lead_vault_migrations`):
//!
//! * **Keys.** Every lead's personal data is sealed in its events with its own
//!   random 256-bit key ([`domain::lead::crypto`]). The key is stored here, in
//!   clear or wrapped with a key-encryption key ([`Kek`], from
//!   `LEAD_KEY_ENCRYPTION_KEY`). Deleting the row is crypto-shredding.
//! * **Email claims.** A unique `(campaign_id, email digest)` row per live lead.
//!   The command side writes claims and keys in the same transaction as the
//!   events (`event_store::append_in_transaction`), so uniqueness holds under
//!   any race and a failed append leaves no claim behind.
//! * **Erasure.** [`LeadVault::erase_lead`] and [`LeadVault::erase_campaign`]
//!   delete a lead's key, its claims and the stored idempotent response of the
//!   request that created it (which holds the lead as JSON).
//!
//! * **Import jobs.** The asynchronous lead import's jobs and the rows it
//!   could not import, as uploaded ([`imports`]): deleted by its retention sweep.
//!
//! Every reader of lead events (command side, projector, publisher) gets keys
//! through [`LeadVault::keys`], so the wrapping rule lives in one place.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use domain::lead::crypto::{self, SecretKey, KEY_LEN, NONCE_LEN};
use domain::lead::{normalized_email, LeadKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::GenericClient;
use uuid::Uuid;

pub mod imports;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Creates or upgrades the vault's tables.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), migrations::MigrationError> {
    migrations::run_migrations(client, embedded::migrations::runner(), "lead_vault_migrations").await
}

/// The environment variable holding the optional key-encryption key.
pub const KEK_ENV: &str = "LEAD_KEY_ENCRYPTION_KEY";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A stored key cannot be used: it was wrapped with a key-encryption key
    /// other than the configured one (or none is configured), or it is corrupt.
    #[error("lead key of {lead_id} is unusable: {reason}")]
    UnusableKey { lead_id: Uuid, reason: String },
}

/// The key-encryption key: wraps every per-lead key before it is stored.
pub struct Kek {
    key: SecretKey,
    /// First 8 bytes of SHA-256 over a label and the key: tells which KEK
    /// wrapped a row without revealing it, so a wrong configuration is an
    /// explicit error instead of a failed decryption.
    id: [u8; 8],
}

impl Kek {
    /// Parses 32 bytes encoded as standard base64 (e.g. `openssl rand -base64 32`).
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| format!("{KEK_ENV} must be base64 (e.g. `openssl rand -base64 32`)"))?;
        let key = SecretKey::from_slice(&bytes)
            .ok_or_else(|| format!("{KEK_ENV} must decode to exactly {KEY_LEN} bytes"))?;
        let digest = Sha256::new()
            .chain_update(b"marketing/lead-kek-id/v1")
            .chain_update(key.as_bytes())
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Ok(Self { key, id })
    }
}

/// A new lead's vault entry, written with its `LeadCreated` event.
pub struct NewLeadEntry<'a> {
    pub lead_id: Uuid,
    pub campaign_id: Uuid,
    pub email_digest: Vec<u8>,
    pub key: &'a LeadKey,
    /// `(project, key)` of the request's `Idempotency-Key`, if it had one.
    pub idempotency: Option<(String, String)>,
}

#[derive(Clone, Default)]
pub struct LeadVault {
    kek: Option<Arc<Kek>>,
}

/// The digest that stands for an email in `lead_email_claims`: SHA-256 over a
/// label, the campaign and the normalized address. Salting with the campaign
/// means the same person in two campaigns cannot be linked through the table.
pub fn email_digest(campaign_id: Uuid, email: &str) -> Vec<u8> {
    Sha256::new()
        .chain_update(b"marketing/lead-email/v1")
        .chain_update(campaign_id.as_bytes())
        .chain_update(normalized_email(email).as_bytes())
        .finalize()
        .to_vec()
}

/// A fresh random lead key. `rand::thread_rng` is a ChaCha-based CSPRNG seeded
/// (and periodically reseeded) from the operating system: safe for keys, and
/// cheap enough for imports that make a million of them.
pub fn generate_key() -> LeadKey {
    let mut bytes = [0u8; KEY_LEN];
    rand::thread_rng().fill_bytes(&mut bytes);
    LeadKey::from_bytes(bytes)
}

/// A fresh random 192-bit nonce.
pub fn generate_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

fn wrap_aad(lead_id: Uuid) -> Vec<u8> {
    let mut aad = b"marketing/lead-key/v1/".to_vec();
    aad.extend_from_slice(lead_id.as_bytes());
    aad
}

impl LeadVault {
    pub fn new(kek: Option<Kek>) -> Self {
        Self {
            kek: kek.map(Arc::new),
        }
    }

    /// From the value of `LEAD_KEY_ENCRYPTION_KEY` (unset or empty: no wrapping).
    pub fn from_setting(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(Self::new(None)),
            Some(encoded) => Ok(Self::new(Some(Kek::from_base64(encoded)?))),
        }
    }

    pub fn wraps_keys(&self) -> bool {
        self.kek.is_some()
    }

    /// `(key_material, kek_id)` as stored.
    fn wrap(&self, lead_id: Uuid, key: &LeadKey) -> (Vec<u8>, Option<Vec<u8>>) {
        match &self.kek {
            None => (key.as_bytes().to_vec(), None),
            Some(kek) => {
                let sealed = crypto::seal(&kek.key, generate_nonce(), &wrap_aad(lead_id), key.as_bytes());
                let mut material = sealed.nonce.to_vec();
                material.extend_from_slice(&sealed.ciphertext);
                (material, Some(kek.id.to_vec()))
            }
        }
    }

    fn unwrap(&self, lead_id: Uuid, material: &[u8], kek_id: Option<&[u8]>) -> Result<LeadKey, VaultError> {
        let unusable = |reason: &str| VaultError::UnusableKey {
            lead_id,
            reason: reason.to_owned(),
        };
        match (kek_id, &self.kek) {
            (None, _) => {
                SecretKey::from_slice(material).ok_or_else(|| unusable("stored key has the wrong length"))
            }
            (Some(_), None) => Err(unusable(&format!(
                "it is wrapped with a key-encryption key, but {KEK_ENV} is not set"
            ))),
            (Some(id), Some(kek)) if id != kek.id => Err(unusable(&format!(
                "it is wrapped with another key-encryption key than the {KEK_ENV} configured"
            ))),
            (Some(_), Some(kek)) => {
                if material.len() < NONCE_LEN {
                    return Err(unusable("wrapped key is truncated"));
                }
                let (nonce, ciphertext) = material.split_at(NONCE_LEN);
                let sealed = crypto::Sealed {
                    nonce: nonce.try_into().expect("split at the nonce length"),
                    ciphertext: ciphertext.to_vec(),
                };
                let plain = crypto::open(&kek.key, &sealed, &wrap_aad(lead_id))
                    .map_err(|_| unusable("wrapped key does not authenticate"))?;
                SecretKey::from_slice(&plain).ok_or_else(|| unusable("unwrapped key has the wrong length"))
            }
        }
    }

    /// The keys of those of `lead_ids` that still have one. A lead missing from
    /// the result was erased (or never existed): its personal data is gone.
    pub async fn keys<C: GenericClient + Sync>(
        &self,
        client: &C,
        lead_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, LeadKey>, VaultError> {
        if lead_ids.is_empty() {
            return Ok(HashMap::new());
        }
        // One primary-key probe per id, whatever the statistics say: a plain
        // `= ANY($1)` may be planned as a scan of the whole table, which at a
        // million leads would make every projection batch read every key.
        let rows = client
            .query(
                "SELECT k.lead_id, k.key_material, k.kek_id
                 FROM unnest($1::uuid[]) AS wanted(id),
                      LATERAL (SELECT lead_id, key_material, kek_id FROM lead_keys
                               WHERE lead_id = wanted.id LIMIT 1) AS k",
                &[&lead_ids],
            )
            .await?;
        let mut keys = HashMap::with_capacity(rows.len());
        for row in rows {
            let lead_id: Uuid = row.get(0);
            let material: &[u8] = row.get(1);
            let kek_id: Option<&[u8]> = row.get(2);
            keys.insert(lead_id, self.unwrap(lead_id, material, kek_id)?);
        }
        Ok(keys)
    }

    pub async fn key<C: GenericClient + Sync>(
        &self,
        client: &C,
        lead_id: Uuid,
    ) -> Result<Option<LeadKey>, VaultError> {
        Ok(self.keys(client, &[lead_id]).await?.remove(&lead_id))
    }

    /// Claims each new lead's email and stores its key, inside the caller's
    /// transaction. Returns the leads whose claim succeeded; the others have an
    /// email already claimed in their campaign (by another lead, or by an
    /// earlier entry of the same call) and got no key: leave their events out.
    ///
    /// Claims are inserted in digest order, so two concurrent imports with
    /// overlapping addresses take the index locks in the same order and cannot
    /// deadlock; the later one waits for the earlier to commit, then sees its
    /// claims as conflicts.
    pub async fn register<C: GenericClient + Sync>(
        &self,
        tx: &C,
        entries: &[NewLeadEntry<'_>],
    ) -> Result<HashSet<Uuid>, VaultError> {
        if entries.is_empty() {
            return Ok(HashSet::new());
        }
        let campaigns: Vec<Uuid> = entries.iter().map(|e| e.campaign_id).collect();
        let digests: Vec<&[u8]> = entries.iter().map(|e| e.email_digest.as_slice()).collect();
        let leads: Vec<Uuid> = entries.iter().map(|e| e.lead_id).collect();
        let claimed = tx
            .query(
                "INSERT INTO lead_email_claims (campaign_id, email_digest, lead_id)
                 SELECT c, d, l FROM unnest($1::uuid[], $2::bytea[], $3::uuid[]) AS t(c, d, l)
                 ORDER BY c, d
                 ON CONFLICT (campaign_id, email_digest) DO NOTHING
                 RETURNING lead_id",
                &[&campaigns, &digests, &leads],
            )
            .await?;
        let accepted: HashSet<Uuid> = claimed.iter().map(|row| row.get(0)).collect();
        let mut ids = Vec::with_capacity(accepted.len());
        let mut campaign_ids = Vec::with_capacity(accepted.len());
        let mut materials = Vec::with_capacity(accepted.len());
        let mut kek_ids = Vec::with_capacity(accepted.len());
        let mut idem_projects = Vec::with_capacity(accepted.len());
        let mut idem_keys = Vec::with_capacity(accepted.len());
        for entry in entries.iter().filter(|e| accepted.contains(&e.lead_id)) {
            let (material, kek_id) = self.wrap(entry.lead_id, entry.key);
            ids.push(entry.lead_id);
            campaign_ids.push(entry.campaign_id);
            materials.push(material);
            kek_ids.push(kek_id);
            idem_projects.push(entry.idempotency.as_ref().map(|(p, _)| p.as_str()));
            idem_keys.push(entry.idempotency.as_ref().map(|(_, k)| k.as_str()));
        }
        if !ids.is_empty() {
            tx.execute(
                "INSERT INTO lead_keys
                     (lead_id, campaign_id, key_material, kek_id, idempotency_project, idempotency_key)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bytea[], $4::bytea[], $5::text[], $6::text[])",
                &[&ids, &campaign_ids, &materials, &kek_ids, &idem_projects, &idem_keys],
            )
            .await?;
        }
        Ok(accepted)
    }

    /// The lead that holds `email_digest` in `campaign_id`, if any: for the
    /// `existing_id` of a duplicate-email `409`, and the lookup of an upsert.
    /// Called after a claim failed in the same transaction, it sees the
    /// holder's committed claim (each statement of a read-committed
    /// transaction takes a new snapshot, and the failed insert waited for the
    /// holder to commit).
    pub async fn holder<C: GenericClient + Sync>(
        &self,
        client: &C,
        campaign_id: Uuid,
        email_digest: &[u8],
    ) -> Result<Option<Uuid>, VaultError> {
        let row = client
            .query_opt(
                "SELECT lead_id FROM lead_email_claims WHERE campaign_id = $1 AND email_digest = $2",
                &[&campaign_id, &email_digest],
            )
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    /// True if `lead_id` holds `email_digest` in `campaign_id`; the claim row
    /// is then locked until the caller's transaction ends, so it cannot be
    /// released or moved before that.
    pub async fn lock_claim<C: GenericClient + Sync>(
        &self,
        tx: &C,
        campaign_id: Uuid,
        email_digest: &[u8],
        lead_id: Uuid,
    ) -> Result<bool, VaultError> {
        let row = tx
            .query_opt(
                "SELECT 1 FROM lead_email_claims
                 WHERE campaign_id = $1 AND email_digest = $2 AND lead_id = $3
                 FOR SHARE",
                &[&campaign_id, &email_digest, &lead_id],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Moves a lead's claim from one email to another inside the caller's
    /// transaction. False if another lead of the campaign holds the new one
    /// (the caller must then roll back).
    pub async fn move_email<C: GenericClient + Sync>(
        &self,
        tx: &C,
        lead_id: Uuid,
        campaign_id: Uuid,
        old_digest: &[u8],
        new_digest: &[u8],
    ) -> Result<bool, VaultError> {
        // Both rows are touched in digest order, the order imports insert in:
        // every writer then locks claims in one global order, so a move racing
        // an import that holds both addresses cannot deadlock with it.
        const RELEASE: &str =
            "DELETE FROM lead_email_claims WHERE campaign_id = $1 AND email_digest = $2 AND lead_id = $3";
        if old_digest < new_digest {
            tx.execute(RELEASE, &[&campaign_id, &old_digest, &lead_id])
                .await?;
        }
        let claimed = tx
            .query_opt(
                "INSERT INTO lead_email_claims (campaign_id, email_digest, lead_id) VALUES ($1, $2, $3)
                 ON CONFLICT (campaign_id, email_digest) DO NOTHING RETURNING 1",
                &[&campaign_id, &new_digest, &lead_id],
            )
            .await?;
        if claimed.is_none() {
            // The caller rolls back, which restores the released claim.
            return Ok(false);
        }
        if old_digest > new_digest {
            tx.execute(RELEASE, &[&campaign_id, &old_digest, &lead_id])
                .await?;
        }
        Ok(true)
    }

    /// Claims `email_digest` in `campaign_id` for `lead_id` beside any claim
    /// the lead holds already. False if another lead holds it. For a log
    /// outside Postgres, where an address change claims the new address
    /// before its event and releases the old one after ([`LeadVault::release_email`]).
    pub async fn claim_email<C: GenericClient + Sync>(
        &self,
        client: &C,
        lead_id: Uuid,
        campaign_id: Uuid,
        email_digest: &[u8],
    ) -> Result<bool, VaultError> {
        let claimed = client
            .query_opt(
                "INSERT INTO lead_email_claims (campaign_id, email_digest, lead_id) VALUES ($1, $2, $3)
                 ON CONFLICT (campaign_id, email_digest) DO NOTHING RETURNING 1",
                &[&campaign_id, &email_digest, &lead_id],
            )
            .await?;
        Ok(claimed.is_some())
    }

    /// Releases `lead_id`'s claim of `email_digest` (nothing if it holds none).
    pub async fn release_email<C: GenericClient + Sync>(
        &self,
        client: &C,
        lead_id: Uuid,
        campaign_id: Uuid,
        email_digest: &[u8],
    ) -> Result<(), VaultError> {
        client
            .execute(
                "DELETE FROM lead_email_claims WHERE campaign_id = $1 AND email_digest = $2 AND lead_id = $3",
                &[&campaign_id, &email_digest, &lead_id],
            )
            .await?;
        Ok(())
    }

    /// True if `lead_id`'s entry (its key, written with its first claim) is
    /// older than `age`, or missing: how a claimant tells a creation that
    /// crashed between its claim and its event from one still in flight.
    pub async fn registered_before<C: GenericClient + Sync>(
        &self,
        client: &C,
        lead_id: Uuid,
        age: std::time::Duration,
    ) -> Result<bool, VaultError> {
        let seconds = age.as_secs_f64();
        let row = client
            .query_opt(
                "SELECT created_at < now() - make_interval(secs => $2) FROM lead_keys WHERE lead_id = $1",
                &[&lead_id, &seconds],
            )
            .await?;
        Ok(row.is_none_or(|row| row.get(0)))
    }

    /// Erases everything the vault holds about a lead, inside the caller's
    /// transaction: its claims, its key (crypto-shredding every event of its
    /// stream) and the stored response of the request that created it.
    pub async fn erase_lead<C: GenericClient + Sync>(&self, tx: &C, lead_id: Uuid) -> Result<(), VaultError> {
        tx.execute("DELETE FROM lead_email_claims WHERE lead_id = $1", &[&lead_id])
            .await?;
        tx.execute(
            "WITH erased AS (
                 DELETE FROM lead_keys WHERE lead_id = $1
                 RETURNING lead_id, idempotency_project, idempotency_key
             )
             DELETE FROM idempotency_keys i USING erased e
             WHERE i.project = e.idempotency_project AND i.key = e.idempotency_key
               AND i.response_headers->>'location' LIKE '%/leads/' || e.lead_id::text",
            &[&lead_id],
        )
        .await?;
        Ok(())
    }

    /// Erases every lead of a deleted campaign (see [`LeadVault::erase_lead`]).
    /// Returns how many keys were destroyed.
    pub async fn erase_campaign<C: GenericClient + Sync>(
        &self,
        tx: &C,
        campaign_id: Uuid,
    ) -> Result<u64, VaultError> {
        tx.execute(
            "DELETE FROM lead_email_claims WHERE campaign_id = $1",
            &[&campaign_id],
        )
        .await?;
        // The rows its imports could not import hold personal data in clear.
        tx.execute(
            "DELETE FROM lead_import_errors WHERE import_id IN
                 (SELECT id FROM lead_imports WHERE campaign_id = $1)",
            &[&campaign_id],
        )
        .await?;
        let erased: i64 = tx
            .query_one(
                "WITH erased AS (
                     DELETE FROM lead_keys WHERE campaign_id = $1
                     RETURNING lead_id, idempotency_project, idempotency_key
                 ), responses AS (
                     DELETE FROM idempotency_keys i USING erased e
                     WHERE i.project = e.idempotency_project AND i.key = e.idempotency_key
                       AND i.response_headers->>'location' LIKE '%/leads/' || e.lead_id::text
                 )
                 SELECT count(*) FROM erased",
                &[&campaign_id],
            )
            .await?
            .get(0);
        Ok(erased as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> Kek {
        Kek::from_base64(&BASE64.encode([byte; KEY_LEN])).unwrap()
    }

    #[test]
    fn wrapped_keys_unwrap_only_with_the_same_kek_and_lead() {
        let lead = Uuid::from_u128(1);
        let key = LeadKey::from_bytes([5; KEY_LEN]);
        let vault = LeadVault::new(Some(kek(1)));
        let (material, kek_id) = vault.wrap(lead, &key);
        assert_ne!(
            &material[NONCE_LEN..NONCE_LEN + KEY_LEN],
            key.as_bytes().as_slice()
        );
        assert_eq!(vault.unwrap(lead, &material, kek_id.as_deref()).unwrap(), key);
        // Another lead's row, another KEK, or no KEK: explicit errors.
        assert!(vault
            .unwrap(Uuid::from_u128(2), &material, kek_id.as_deref())
            .is_err());
        let other = LeadVault::new(Some(kek(2)));
        let err = other.unwrap(lead, &material, kek_id.as_deref()).unwrap_err();
        assert!(err.to_string().contains("another key-encryption key"), "{err}");
        let none = LeadVault::new(None);
        let err = none.unwrap(lead, &material, kek_id.as_deref()).unwrap_err();
        assert!(err.to_string().contains("not set"), "{err}");
        // Unwrapped rows still read after a KEK is introduced.
        let (plain, no_id) = none.wrap(lead, &key);
        assert_eq!(vault.unwrap(lead, &plain, no_id.as_deref()).unwrap(), key);
    }

    #[test]
    fn kek_setting_is_validated() {
        assert!(!LeadVault::from_setting(None).unwrap().wraps_keys());
        assert!(!LeadVault::from_setting(Some("  ")).unwrap().wraps_keys());
        assert!(LeadVault::from_setting(Some(&BASE64.encode([1u8; 32])))
            .unwrap()
            .wraps_keys());
        assert!(LeadVault::from_setting(Some("not base64!")).is_err());
        assert!(LeadVault::from_setting(Some(&BASE64.encode([1u8; 16]))).is_err());
    }

    #[test]
    fn email_digests_ignore_case_and_spaces_but_not_the_campaign() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        assert_eq!(
            email_digest(a, "John@Example.com "),
            email_digest(a, "john@example.com")
        );
        assert_ne!(
            email_digest(a, "john@example.com"),
            email_digest(b, "john@example.com")
        );
        assert_ne!(
            email_digest(a, "john@example.com"),
            email_digest(a, "jon@example.com")
        );
    }
}
