//! `Idempotency-Key` on POST: the first response to a key is stored and replayed
//! for retries of the same request; the same key with a different request is a
//! 409. Keys are scoped to the caller's project and kept for 24 hours.
//!
//! Storing the response is not the whole story: a request that crashed after
//! appending but before storing its response would, on retry, append again.
//! Handlers therefore derive their event ids (and the id of a resource they
//! create) from the key via [`IdempotencyKey`], so the retried append is a no-op
//! at the event store and the retry returns the same resource.
//!
//! Two flavours share the claim/replay logic. [`idempotency`] buffers a JSON
//! body (within [`JSON_BODY_LIMIT`]) to hash it. [`idempotency_for_uploads`], for
//! `multipart/form-data` routes whose bodies may be many megabytes, streams the
//! body to a temporary spool file while hashing it (never holding it in memory),
//! claims the key with that hash, then hands the handler the spooled body; the
//! spool file is deleted when the request ends. A replay or a 409 never runs the
//! handler, so a retried upload stores nothing twice. A multipart body is hashed
//! by its parts (names, file names, types, bytes), not its raw framing: clients
//! such as curl pick a random boundary for every request, so the raw bytes of a
//! faithful retry differ.

use crate::auth::{ApiKeys, Caller};
use crate::extract::JSON_BODY_LIMIT;
use crate::ApiError;
use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

pub const HEADER: &str = "idempotency-key";
/// Set on a response that is a replay of a stored one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 255;
/// Response headers worth replaying; the rest are per-response.
const STORED_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// Namespace for ids derived from idempotency keys.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6d6b_7469_6465_6d70_6f74_656e_6379_0001);

/// The key of the current request, for handlers that derive ids from it.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub project: String,
    pub key: String,
}

impl IdempotencyKey {
    /// A stable id for the `n`-th thing of kind `what` this request creates.
    pub fn derive_id(&self, what: &str, n: usize) -> Uuid {
        Uuid::new_v5(
            &ID_NAMESPACE,
            format!("{}\u{0}{}\u{0}{what}\u{0}{n}", self.project, self.key).as_bytes(),
        )
    }
}

/// Ids for the events and resources of one request: derived from the
/// idempotency key when there is one, fresh otherwise.
#[derive(Debug, Clone)]
pub struct IdSource(Option<IdempotencyKey>);

impl IdSource {
    pub fn new(key: Option<IdempotencyKey>) -> Self {
        Self(key)
    }

    pub fn id(&self, what: &str, n: usize) -> Uuid {
        match &self.0 {
            Some(key) => key.derive_id(what, n),
            None => Uuid::now_v7(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdSource {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(IdSource(parts.extensions.get::<IdempotencyKey>().cloned()))
    }
}

#[derive(Clone)]
pub struct IdempotencyState {
    pub pool: Pool,
    pub keys: ApiKeys,
}

impl FromRef<IdempotencyState> for ApiKeys {
    fn from_ref(state: &IdempotencyState) -> Self {
        state.keys.clone()
    }
}

enum Claim {
    /// This request owns the key and runs.
    Owned,
    Replay(Response),
}

/// State of [`idempotency_for_uploads`].
#[derive(Clone)]
pub struct UploadIdempotencyState {
    pub inner: IdempotencyState,
    /// Where request bodies are spooled while their key is claimed.
    pub spool_dir: PathBuf,
    /// Largest body spooled, in bytes; beyond it the request is a 413.
    pub max_body: u64,
}

/// Middleware for routes whose POST bodies are JSON (buffered within the JSON limit).
pub async fn idempotency(State(state): State<IdempotencyState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !req.headers().contains_key(HEADER) {
        return next.run(req).await;
    }
    match run(state, req, next, None).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Middleware for upload routes: like [`idempotency`], but the body is hashed
/// while it streams to a spool file, so its size is bounded by `max_body`, not
/// by memory.
pub async fn idempotency_for_uploads(
    State(state): State<UploadIdempotencyState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST || !req.headers().contains_key(HEADER) {
        return next.run(req).await;
    }
    let spool = Spool {
        dir: state.spool_dir.clone(),
        max_body: state.max_body,
    };
    match run(state.inner, req, next, Some(spool)).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

struct Spool {
    dir: PathBuf,
    max_body: u64,
}

/// Deletes the spool file when the request is over, however it ended.
struct SpoolFile(PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(%error, path = %self.0.display(), "cannot delete an idempotency spool file");
            }
        }
    }
}

/// Streams `body` into a new spool file, feeding `hasher`; returns a body that
/// reads the file back, and the guard that deletes it.
async fn spool_body(body: Body, spool: &Spool, hasher: &mut Sha256) -> Result<(Body, SpoolFile), ApiError> {
    use futures::StreamExt;
    tokio::fs::create_dir_all(&spool.dir)
        .await
        .map_err(ApiError::internal)?;
    let guard = SpoolFile(spool.dir.join(format!("idempotency-{}.body", Uuid::new_v4())));
    let mut file = tokio::fs::File::create(&guard.0)
        .await
        .map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request("body", format!("cannot read request body: {e}")))?;
        total += chunk.len() as u64;
        if total > spool.max_body {
            return Err(ApiError::PayloadTooLarge(format!(
                "Request body is too large (limit {} bytes)",
                spool.max_body
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    file.flush().await.map_err(ApiError::internal)?;
    drop(file);
    let reader = tokio::fs::File::open(&guard.0)
        .await
        .map_err(ApiError::internal)?;
    Ok((
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
        guard,
    ))
}

/// A hash of a spooled multipart body that does not depend on its boundary:
/// every part's name, file name, content type and bytes, each length-prefixed.
/// `None` if the body does not parse (the handler will refuse it anyway).
async fn multipart_digest(path: &std::path::Path, boundary: String) -> Option<Vec<u8>> {
    fn field(hasher: &mut Sha256, value: Option<&str>) {
        let value = value.unwrap_or("");
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    let file = tokio::fs::File::open(path).await.ok()?;
    let mut multipart = multer::Multipart::new(tokio_util::io::ReaderStream::new(file), boundary);
    let mut hasher = Sha256::new();
    while let Some(mut part) = multipart.next_field().await.ok()? {
        field(&mut hasher, part.name());
        field(&mut hasher, part.file_name());
        field(&mut hasher, part.content_type().map(|m| m.as_ref()));
        let mut length: u64 = 0;
        while let Some(chunk) = part.chunk().await.ok()? {
            length += chunk.len() as u64;
            hasher.update(&chunk);
        }
        hasher.update(length.to_be_bytes());
    }
    Some(hasher.finalize().to_vec())
}

async fn run(
    state: IdempotencyState,
    req: Request,
    next: Next,
    spool: Option<Spool>,
) -> Result<Response, ApiError> {
    // The caller the access guard admitted (it runs first, so a 401, 403 or
    // 429 is never stored here): records are per project.
    let (mut parts, body) = req.into_parts();
    let caller = Caller::from_request_parts(&mut parts, &state).await?;
    let key = parts
        .headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN)
        .ok_or_else(|| {
            ApiError::bad_request(
                "Idempotency-Key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
            )
        })?
        .to_owned();
    // Held until the response is out: the spooled body is read from it.
    let (body, request_hash, _spool_file) = hash_request(&parts, body, spool).await?;
    let project = caller.project.to_string();

    if let Claim::Replay(response) = claim(&state.pool, &project, &key, &request_hash).await? {
        return Ok(response);
    }
    parts.extensions.insert(IdempotencyKey {
        project: project.clone(),
        key: key.clone(),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    store_response(&state.pool, &project, &key, response).await
}

/// What makes two requests "the same": method, path, query and body. A JSON
/// body is buffered; an upload is spooled to disk, and a multipart one is
/// hashed part by part, so the random boundary does not count.
async fn hash_request(
    parts: &axum::http::request::Parts,
    body: Body,
    spool: Option<Spool>,
) -> Result<(Body, Vec<u8>, Option<SpoolFile>), ApiError> {
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str());
    hasher.update([0]);
    hasher.update(parts.uri.path());
    hasher.update([0]);
    hasher.update(parts.uri.query().unwrap_or(""));
    hasher.update([0]);
    let Some(spool) = spool else {
        let bytes = axum::body::to_bytes(body, JSON_BODY_LIMIT).await.map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "Request body is too large (limit {JSON_BODY_LIMIT} bytes)"
            ))
        })?;
        hasher.update(&bytes);
        return Ok((Body::from(bytes), hasher.finalize().to_vec(), None));
    };
    let mut raw = Sha256::new();
    let (body, file) = spool_body(body, &spool, &mut raw).await?;
    let boundary = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok());
    let parts_digest = match boundary {
        Some(boundary) => multipart_digest(&file.0, boundary).await,
        None => None,
    };
    match parts_digest {
        Some(digest) => {
            hasher.update(b"multipart\0");
            hasher.update(digest);
        }
        None => hasher.update(raw.finalize()),
    }
    Ok((body, hasher.finalize().to_vec(), Some(file)))
}

/// Stores a response for replay, or forgets the key after a server error so
/// the client can retry from scratch.
async fn store_response(
    pool: &Pool,
    project: &str,
    key: &str,
    response: Response,
) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    let client = pool.get().await?;
    if parts.status.is_server_error() {
        client
            .execute(
                "DELETE FROM idempotency_keys WHERE project = $1 AND key = $2",
                &[&project, &key],
            )
            .await?;
        return Ok(Response::from_parts(parts, body));
    }
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot buffer response: {e}")))?;
    let mut stored_headers = Map::new();
    for name in STORED_HEADERS {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            stored_headers.insert(name.to_owned(), Value::from(value));
        }
    }
    client
        .execute(
            "UPDATE idempotency_keys SET status_code = $3, response_headers = $4, response_body = $5
             WHERE project = $1 AND key = $2",
            &[
                &project,
                &key,
                &i32::from(parts.status.as_u16()),
                &Value::Object(stored_headers),
                &body.as_ref(),
            ],
        )
        .await?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

async fn claim(pool: &Pool, project: &str, key: &str, request_hash: &[u8]) -> Result<Claim, ApiError> {
    let client = pool.get().await?;
    // Take the key if it is new, expired, or abandoned by a crashed request.
    let owned = client
        .query_opt(
            "INSERT INTO idempotency_keys (project, key, request_hash, locked_until)
             VALUES ($1, $2, $3, now() + interval '60 seconds')
             ON CONFLICT (project, key) DO UPDATE SET
                 request_hash = excluded.request_hash, locked_until = excluded.locked_until,
                 status_code = NULL, response_headers = NULL, response_body = NULL, created_at = now()
             WHERE idempotency_keys.created_at < now() - interval '24 hours'
                OR (idempotency_keys.status_code IS NULL
                    AND idempotency_keys.locked_until < now()
                    AND idempotency_keys.request_hash = excluded.request_hash)
             RETURNING 1",
            &[&project, &key, &request_hash],
        )
        .await?;
    if owned.is_some() {
        return Ok(Claim::Owned);
    }
    let row = client
        .query_one(
            "SELECT request_hash, status_code, response_headers, response_body
             FROM idempotency_keys WHERE project = $1 AND key = $2",
            &[&project, &key],
        )
        .await?;
    if row.get::<_, Vec<u8>>(0) != request_hash {
        return Err(ApiError::Conflict(
            "Idempotency-Key was already used with a different request".into(),
        ));
    }
    let Some(status) = row.get::<_, Option<i32>>(1) else {
        return Err(ApiError::Conflict(
            "A request with this Idempotency-Key is still in progress; retry later".into(),
        ));
    };
    let mut headers = HeaderMap::new();
    if let Some(Value::Object(stored)) = row.get::<_, Option<Value>>(2) {
        for (name, value) in stored {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(name, value);
            }
        }
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let body = row.get::<_, Option<Vec<u8>>>(3).unwrap_or_default();
    Ok(Claim::Replay((status, headers, body).into_response()))
}

/// Deletes records older than 24 hours; run periodically.
pub async fn purge_expired(pool: &Pool) -> Result<u64, ApiError> {
    let client = pool.get().await?;
    Ok(client
        .execute(
            "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'",
            &[],
        )
        .await?)
}
