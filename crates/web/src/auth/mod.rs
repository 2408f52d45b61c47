//! Bearer API keys. Each key belongs to one project; everything a request can
//! see or touch is scoped to that project. Serving processes keep live keys in
//! a cache whose revocation bound is explained in [`cache`].

pub mod cache;

use crate::ApiError;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use base64::Engine;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use domain::ProjectSlug;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use cache::{KeyCache, KeyHash, Lookup};

/// Every secret starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "mk_";

/// Who is calling: the key and its project. Handlers take this as an extractor,
/// so an unauthenticated request never reaches them.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub key_name: String,
    pub project: ProjectSlug,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub project: String,
    pub name: String,
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Clone)]
pub struct ApiKeys {
    pool: Pool,
    /// `None` in one-shot tools (the CLI), which look every key up.
    cache: Option<Arc<KeyCache>>,
}

fn hash(secret: &str) -> KeyHash {
    Sha256::digest(secret.as_bytes()).into()
}

fn well_formed(secret: &str) -> bool {
    secret.starts_with(KEY_PREFIX) && secret.len() <= 128
}

fn bearer_secret(parts: &Parts) -> Option<&str> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, secret) = header.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && well_formed(secret)).then_some(secret)
}

impl ApiKeys {
    /// Looks every key up in the database: for one-shot tools.
    pub fn new(pool: Pool) -> Self {
        Self { pool, cache: None }
    }

    /// With a cache of live keys, for serving processes. The cache is
    /// consulted only once [`ApiKeys::spawn_cache_poller`] (or
    /// [`ApiKeys::poll_cache`]) has confirmed it.
    pub fn cached(pool: Pool) -> Self {
        Self {
            pool,
            cache: Some(Arc::default()),
        }
    }

    /// Keeps the cache confirmed until `stop`, reading key changes through
    /// `pool`. A pool of its own, so polls never queue behind requests
    /// waiting for a connection: a busy process would otherwise stop trusting
    /// its cache exactly when it needs it most. `None` without a cache.
    pub fn spawn_cache_poller(&self, pool: Pool, stop: CancellationToken) -> Option<JoinHandle<()>> {
        let cache = self.cache.clone()?;
        Some(cache.spawn_poller(pool, stop))
    }

    /// Reads key changes once, as the poller does (for tests that step it).
    pub async fn poll_cache(&self) -> anyhow::Result<()> {
        match &self.cache {
            Some(cache) => cache.poll(&self.pool).await,
            None => Ok(()),
        }
    }

    /// Whether a request with `secret` would be authenticated from the cache
    /// now, without the database (for tests and diagnostics).
    pub fn serves_from_cache(&self, secret: &str) -> bool {
        self.cache
            .as_ref()
            .is_some_and(|cache| cache.holds(&hash(secret), Instant::now()))
    }

    /// Creates a key and returns it with its secret. The secret is not stored
    /// and cannot be shown again.
    pub async fn create(&self, project: &ProjectSlug, name: &str) -> anyhow::Result<(ApiKeyInfo, String)> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let id = Uuid::now_v7();
        let prefix: String = secret.chars().take(10).collect();
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO api_keys (id, project, name, key_hash, key_prefix)
                 VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
                &[&id, &project.as_str(), &name, &hash(&secret).as_slice(), &prefix],
            )
            .await?;
        let info = ApiKeyInfo {
            id,
            project: project.to_string(),
            name: name.to_owned(),
            key_prefix: prefix,
            created_at: row.get(0),
            revoked_at: None,
        };
        Ok((info, secret))
    }

    pub async fn list(&self) -> anyhow::Result<Vec<ApiKeyInfo>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, project, name, key_prefix, created_at, revoked_at FROM api_keys ORDER BY created_at",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| ApiKeyInfo {
                id: row.get(0),
                project: row.get(1),
                name: row.get(2),
                key_prefix: row.get(3),
                created_at: row.get(4),
                revoked_at: row.get(5),
            })
            .collect())
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
    /// else in the database (caching a live key found there).
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
            Some(Lookup::Hit(caller)) => return Ok(Some(caller)),
            Some(Lookup::Miss(epoch)) => Some(epoch),
            None => None,
        };
        let caller = self.look_up(&hash).await?;
        if let (Some(cache), Some(epoch), Some(caller)) = (&self.cache, epoch, &caller) {
            cache.insert(epoch, hash, caller.clone());
        }
        Ok(caller)
    }

    /// One primary-key probe.
    async fn look_up(&self, hash: &KeyHash) -> Result<Option<Caller>, ApiError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, name, project FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&hash.as_slice()]).await? else {
            return Ok(None);
        };
        let project: String = row.get(2);
        Ok(Some(Caller {
            key_id: row.get(0),
            key_name: row.get(1),
            project: ProjectSlug::parse(&project).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?,
        }))
    }
}

impl<S> FromRequestParts<S> for Caller
where
    ApiKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let secret = bearer_secret(parts).ok_or(ApiError::Unauthorized)?;
        let keys = ApiKeys::from_ref(state);
        let caller = keys.authenticate(secret).await?.ok_or(ApiError::Unauthorized)?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}
