//! Bearer API keys. Each key belongs to one project; everything a request can
//! see or touch is scoped to that project. Serving processes keep live keys in
//! a cache whose revocation bound is explained in [`cache`].

pub mod cache;
pub mod scope;
pub mod usage;

use crate::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use domain::ProjectSlug;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use cache::{KeyCache, KeyHash, Lookup};
pub use scope::{Scope, Scopes};
use usage::Usage;

/// Every secret starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "mk_";

/// The longest `--expires-in` a key may be created with (ten years): a bound
/// that catches a unit mistake, not a policy.
pub const MAX_LIFETIME: Duration = Duration::from_secs(3650 * 86_400);

/// The longest grace period of a rotation (30 days): an old secret that must
/// work longer than that is a second key, which can be revoked on its own.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// The grace period of a rotation when none is given.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Who is calling: the key, its project and what it may do. Handlers take this
/// as an extractor; the access guard ([`crate::access`]) put it there after
/// authenticating the request and checking the route's scope.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub key_name: String,
    pub project: ProjectSlug,
    pub scopes: Scopes,
    /// When the secret used stops working: the key's expiry, or the end of
    /// the grace period of a secret replaced by a rotation, whichever is first.
    pub expires_at: Option<DateTime<Utc>>,
}

impl Caller {
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub project: String,
    pub name: String,
    /// The first characters of the current secret.
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
    /// As recorded by the serving processes, at most [`usage::FLUSH_INTERVAL`]
    /// behind.
    pub last_used_at: Option<DateTime<Utc>>,
    /// While a rotation's grace period runs: when the last previous secret
    /// stops working.
    pub previous_secret_until: Option<DateTime<Utc>>,
}

impl ApiKeyInfo {
    /// `active`, `expired` or `revoked`, as of `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Why a rotation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("no active key with id {0}")]
    NotFound(Uuid),
    #[error("key {0} has expired; create a new key instead")]
    Expired(Uuid),
    #[error(transparent)]
    Database(#[from] anyhow::Error),
}

#[derive(Clone)]
pub struct ApiKeys {
    pool: Pool,
    /// `None` in one-shot tools (the CLI), which look every key up.
    cache: Option<Arc<KeyCache>>,
    /// Last use, recorded in serving processes only.
    usage: Option<Arc<Usage>>,
    /// Per-key rate limits; off unless [`ApiKeys::with_rate_limits`].
    limits: Option<Arc<crate::rate_limit::RateLimits>>,
}

fn hash(secret: &str) -> KeyHash {
    Sha256::digest(secret.as_bytes()).into()
}

fn well_formed(secret: &str) -> bool {
    secret.starts_with(KEY_PREFIX) && secret.len() <= 128
}

/// The bearer secret of a request, if it has a well-formed one.
pub fn bearer_secret(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = header.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && well_formed(secret)).then_some(secret)
}

/// A new random secret and its listing prefix.
fn new_secret() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let prefix: String = secret.chars().take(10).collect();
    (secret, prefix)
}

fn after(duration: Duration) -> anyhow::Result<DateTime<Utc>> {
    let duration = chrono::Duration::from_std(duration)?;
    Utc::now()
        .checked_add_signed(duration)
        .ok_or_else(|| anyhow::anyhow!("duration out of range"))
}

const LIST: &str = "SELECT k.id, k.project, k.name, k.key_prefix, k.created_at, k.revoked_at,
        k.scopes, k.expires_at, u.last_used_at,
        (SELECT max(s.expires_at) FROM api_key_secrets s
          WHERE s.key_id = k.id AND s.expires_at > now())
   FROM api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id";

fn info(row: &tokio_postgres::Row) -> ApiKeyInfo {
    ApiKeyInfo {
        id: row.get(0),
        project: row.get(1),
        name: row.get(2),
        key_prefix: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
        scopes: Scopes::from_stored(row.get(6)),
        expires_at: row.get(7),
        last_used_at: row.get(8),
        previous_secret_until: row.get(9),
    }
}

impl ApiKeys {
    /// Looks every key up in the database: for one-shot tools.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            cache: None,
            usage: None,
            limits: None,
        }
    }

    /// With a cache of live keys and a record of their use, for serving
    /// processes. The cache is consulted only once
    /// [`ApiKeys::spawn_background`] (or [`ApiKeys::poll_cache`]) has
    /// confirmed it.
    pub fn cached(pool: Pool) -> Self {
        Self {
            pool,
            cache: Some(Arc::default()),
            usage: Some(Arc::default()),
            limits: None,
        }
    }

    /// Enforces per-key rate limits on every request the access guard admits.
    pub fn with_rate_limits(mut self, limits: crate::rate_limit::RateLimits) -> Self {
        self.limits = Some(Arc::new(limits));
        self
    }

    pub fn rate_limits(&self) -> Option<&crate::rate_limit::RateLimits> {
        self.limits.as_deref()
    }

    /// The background work of a serving process until `stop`: the cache
    /// poller, the last-use writer and the rate limits' heartbeat. They read
    /// and write through `pool`, a pool of their own, so polls never queue
    /// behind requests waiting for a connection: a busy process would
    /// otherwise stop trusting its cache exactly when it needs it most.
    pub fn spawn_background(&self, pool: Pool, stop: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(cache) = &self.cache {
            tasks.push(cache.clone().spawn_poller(pool.clone(), stop.clone()));
        }
        if let Some(usage) = &self.usage {
            tasks.push(usage.clone().spawn_writer(pool.clone(), stop.clone()));
        }
        if let Some(limits) = &self.limits {
            tasks.push(limits.spawn_heartbeat(pool, stop));
        }
        tasks
    }

    /// Reads key changes once, as the poller does (for tests that step it).
    pub async fn poll_cache(&self) -> anyhow::Result<()> {
        match &self.cache {
            Some(cache) => cache.poll(&self.pool).await,
            None => Ok(()),
        }
    }

    /// Writes the recorded last uses now, as the writer does every
    /// [`usage::FLUSH_INTERVAL`] (for tests and shutdown).
    pub async fn flush_usage(&self) -> anyhow::Result<()> {
        match &self.usage {
            Some(usage) => usage.flush(&self.pool).await,
            None => Ok(()),
        }
    }

    /// Notes that `caller`'s key was used just now (memory only).
    pub fn record_use(&self, caller: &Caller) {
        if let Some(usage) = &self.usage {
            usage.touch(caller.key_id, Utc::now());
        }
    }

    /// Whether a request with `secret` would be authenticated from the cache
    /// now, without the database (for tests and diagnostics).
    pub fn serves_from_cache(&self, secret: &str) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.holds(&hash(secret), Instant::now()))
    }

    /// Creates a key with every scope and no expiry, and returns it with its
    /// secret. The secret is not stored and cannot be shown again.
    pub async fn create(&self, project: &ProjectSlug, name: &str) -> anyhow::Result<(ApiKeyInfo, String)> {
        self.create_scoped(project, name, Scopes::all(), None).await
    }

    /// Creates a key with `scopes`, expiring `expires_in` from now if given.
    pub async fn create_scoped(
        &self,
        project: &ProjectSlug,
        name: &str,
        scopes: Scopes,
        expires_in: Option<Duration>,
    ) -> anyhow::Result<(ApiKeyInfo, String)> {
        anyhow::ensure!(scopes.iter().next().is_some(), "a key needs at least one scope");
        if let Some(lifetime) = expires_in {
            anyhow::ensure!(
                !lifetime.is_zero() && lifetime <= MAX_LIFETIME,
                "--expires-in must be more than 0 and at most 3650d"
            );
        }
        let expires_at = expires_in.map(after).transpose()?;
        let (secret, prefix) = new_secret();
        let id = Uuid::now_v7();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO api_keys (id, project, name, key_prefix, scopes, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &id,
                &project.as_str(),
                &name,
                &prefix,
                &scopes.to_stored(),
                &expires_at,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO api_key_secrets (key_hash, key_id, key_prefix) VALUES ($1, $2, $3)",
            &[&hash(&secret).as_slice(), &id, &prefix],
        )
        .await?;
        let row = tx.query_one(&format!("{LIST} WHERE k.id = $1"), &[&id]).await?;
        tx.commit().await?;
        Ok((info(&row), secret))
    }

    /// Issues a new secret for a live key. Its other secrets keep working for
    /// `grace` (those already in a shorter grace period keep theirs), so
    /// clients can switch without an outage; `Duration::ZERO` ends them now.
    pub async fn rotate(&self, id: Uuid, grace: Duration) -> Result<(ApiKeyInfo, String), RotateError> {
        if grace > MAX_GRACE {
            return Err(anyhow::anyhow!("--grace must be at most 30d").into());
        }
        let grace_end = after(grace)?;
        let (secret, prefix) = new_secret();
        let mut client = self.pool.get().await.map_err(anyhow::Error::from)?;
        let tx = client.transaction().await.map_err(anyhow::Error::from)?;
        let db = |e: tokio_postgres::Error| RotateError::Database(e.into());
        let key = tx
            .query_opt(
                "SELECT expires_at FROM api_keys WHERE id = $1 AND revoked_at IS NULL FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(db)?
            .ok_or(RotateError::NotFound(id))?;
        let expires_at: Option<DateTime<Utc>> = key.get(0);
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(RotateError::Expired(id));
        }
        tx.execute(
            "UPDATE api_key_secrets SET expires_at = LEAST(COALESCE(expires_at, $2), $2) WHERE key_id = $1",
            &[&id, &grace_end],
        )
        .await
        .map_err(db)?;
        // Housekeeping: secrets whose grace is over are dead weight.
        tx.execute(
            "DELETE FROM api_key_secrets WHERE key_id = $1 AND expires_at <= now()",
            &[&id],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO api_key_secrets (key_hash, key_id, key_prefix) VALUES ($1, $2, $3)",
            &[&hash(&secret).as_slice(), &id, &prefix],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "UPDATE api_keys SET key_prefix = $2 WHERE id = $1",
            &[&id, &prefix],
        )
        .await
        .map_err(db)?;
        let row = tx
            .query_one(&format!("{LIST} WHERE k.id = $1"), &[&id])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        if let Some(cache) = &self.cache {
            cache.invalidate();
        }
        Ok((info(&row), secret))
    }

    pub async fn list(&self) -> anyhow::Result<Vec<ApiKeyInfo>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(&format!("{LIST} ORDER BY k.created_at, k.id"), &[])
            .await?;
        Ok(rows.iter().map(info).collect())
    }

    /// Revokes a key; true if it existed and was live. Refused at once by this
    /// process, by every other within the bound of [`cache`].
    pub async fn revoke(&self, id: Uuid) -> anyhow::Result<bool> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                &[&id],
            )
            .await?;
        // After the commit: a lookup that starts from now on reads the revocation.
        if let Some(cache) = &self.cache {
            cache.invalidate();
        }
        Ok(n == 1)
    }

    /// Looks a secret up: in the cache when it is confirmed and holds the key,
    /// else in the database (caching a live key found there). An expired key
    /// or secret is `None`, like an unknown one; expiry is checked on every
    /// request against this process's clock, so a cached entry stops working
    /// at its expiry without any poll.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>, ApiError> {
        if !well_formed(secret) {
            return Ok(None);
        }
        let hash = hash(secret);
        let epoch = match self
            .cache
            .as_deref()
            .map(|cache| cache.get(&hash, Instant::now()))
        {
            Some(Lookup::Hit(caller)) => return Ok(Some(caller).filter(|c| !c.expired(Utc::now()))),
            Some(Lookup::Miss(epoch)) => Some(epoch),
            None => None,
        };
        let caller = self.look_up(&hash).await?;
        if let (Some(cache), Some(epoch), Some(caller)) = (&self.cache, epoch, &caller) {
            cache.insert(epoch, hash, caller.clone());
        }
        Ok(caller.filter(|c| !c.expired(Utc::now())))
    }

    /// One primary-key probe and a join on the key's primary key.
    async fn look_up(&self, hash: &KeyHash) -> Result<Option<Caller>, ApiError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT k.id, k.name, k.project, k.scopes, k.expires_at, s.expires_at
                   FROM api_key_secrets s JOIN api_keys k ON k.id = s.key_id
                  WHERE s.key_hash = $1 AND k.revoked_at IS NULL",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&hash.as_slice()]).await? else {
            return Ok(None);
        };
        let project: String = row.get(2);
        let key_expiry: Option<DateTime<Utc>> = row.get(4);
        let secret_expiry: Option<DateTime<Utc>> = row.get(5);
        Ok(Some(Caller {
            key_id: row.get(0),
            key_name: row.get(1),
            project: ProjectSlug::parse(&project).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?,
            scopes: Scopes::from_stored(row.get(3)),
            expires_at: key_expiry.into_iter().chain(secret_expiry).min(),
        }))
    }
}

/// The caller the access guard admitted. A handler reached without passing the
/// guard is a wiring bug: it is answered 500, never served unauthenticated.
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "{} reached a handler without the access guard (web::access::guard)",
                parts.uri.path()
            ))
        })
    }
}
