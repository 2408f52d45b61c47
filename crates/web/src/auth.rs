//! Bearer API keys. Each key belongs to one project; everything a request can
//! see or touch is scoped to that project.

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
use uuid::Uuid;

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
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The SHA-256 of a well-formed bearer secret, without looking it up. For hot
/// read paths that authenticate inside their own query (one round trip instead
/// of two); they must answer 401 when that query finds no live key.
#[derive(Debug, Clone)]
pub struct BearerKeyHash(pub Vec<u8>);

fn bearer_secret(parts: &Parts) -> Option<&str> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, secret) = header.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && secret.starts_with(KEY_PREFIX) && secret.len() <= 128)
        .then_some(secret)
}

impl<S: Send + Sync> FromRequestParts<S> for BearerKeyHash {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        bearer_secret(parts)
            .map(|secret| BearerKeyHash(hash(secret)))
            .ok_or(ApiError::Unauthorized)
    }
}

impl ApiKeys {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
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
                &[&id, &project.as_str(), &name, &hash(&secret), &prefix],
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

    /// Revokes a key; true if it existed and was live.
    pub async fn revoke(&self, id: Uuid) -> anyhow::Result<bool> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
                &[&id],
            )
            .await?;
        Ok(n == 1)
    }

    /// Looks a secret up. No cache: a revoked key stops working at once, in
    /// every process, and the lookup is one primary-key probe.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Caller>, ApiError> {
        if !secret.starts_with(KEY_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, name, project FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&hash(secret)]).await? else {
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
